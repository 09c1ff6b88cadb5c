"""Parameter and MAC counts, measured by running the model under torch's FLOP counter.

MACs follow the papers' convention: convolutions and linear layers ("conv+linear", what the
paper's FLOPs column counts), and separately the same plus batched matmuls (attention QK^T, AV).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

_CONV_LINEAR_OPS = {"convolution", "_convolution", "addmm", "mm"}
_MATMUL_OPS = {"bmm", "baddbmm", "matmul", "_scaled_dot_product_efficient_attention",
               "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention"}


@dataclass(frozen=True)
class Profile:
    """Measured size and compute of one model at one input size (batch 1)."""

    params: int
    macs_conv_linear: int
    macs_total: int
    img_size: tuple[int, int]

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        """Conv + linear GMACs (the paper's FLOPs convention)."""
        return self.macs_conv_linear / 1e9

    @property
    def gmacs_total(self) -> float:
        return self.macs_total / 1e9


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


def profile(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> Profile:
    """Params and MACs (with and without attention matmuls) for one image of ``img_size``."""
    height, width = _size(img_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, in_chans, height, width, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    conv_linear = matmul = 0
    for op, flops in counter.get_flop_counts()["Global"].items():
        name = str(getattr(op, "__name__", op)).split(".")[0]  # aten.convolution -> convolution
        if name in _CONV_LINEAR_OPS:
            conv_linear += flops // 2
        elif name in _MATMUL_OPS:
            matmul += flops // 2
    return Profile(count_params(model), conv_linear, conv_linear + matmul, (height, width))
