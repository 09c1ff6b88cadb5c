"""Small building blocks shared by the peer implementations."""

from __future__ import annotations

import torch
import torch.nn as nn


def conv_norm_act(
    in_chs: int,
    out_chs: int,
    kernel_size: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = None,
    bias: bool = False,
) -> nn.Sequential:
    """Conv2d (same padding) + BatchNorm2d (+ activation), as one Sequential so deploy folds the BN."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias),
        nn.BatchNorm2d(out_chs),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% below it (MobileNetV2 rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class FixedInputSize:
    """For models built for one input size (position tables, baked kernels): checks at build and at run time."""

    display_name = "this model"
    img_size: int

    def set_input_size(self, img_size: int) -> None:
        if img_size % 32:
            raise ValueError(f"{self.display_name} needs an input size divisible by 32, got {img_size}")
        self.img_size = img_size

    def check_input(self, x: torch.Tensor) -> None:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"{self.display_name} is built for {self.img_size}x{self.img_size} inputs, "
                             f"got {tuple(x.shape[-2:])}")


class GeluMlp(nn.Module):
    """fc1, GELU, fc2: linear layers on tokens, or 1x1 convolutions on NCHW maps (``pointwise_conv``)."""

    def __init__(self, dim: int, hidden: int, pointwise_conv: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1) if pointwise_conv else nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1) if pointwise_conv else nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
