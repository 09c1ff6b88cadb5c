"""The ParC operator shared by ParC-Net-S and ParC-ResNet50: a circular, image-wide 1-D convolution.

Circular padding is written as Slice + Concat (portable to every runtime; no ONNX Pad 'wrap').
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

VERTICAL, HORIZONTAL = "H", "W"


def circular_extend(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Append all but the last row (H) / column (W), so a valid conv of size K wraps around the image."""
    if direction == VERTICAL:
        return torch.cat((x, x[:, :, :-1, :]), dim=2)
    return torch.cat((x, x[:, :, :, :-1]), dim=3)


def kernel_shape(size: int, direction: str) -> tuple[int, int]:
    return (size, 1) if direction == VERTICAL else (1, size)


def resize_along(t: torch.Tensor, size: int, direction: str) -> torch.Tensor:
    """Bilinearly resize a (.., K, 1) / (.., 1, K) parameter to ``size`` along its long axis (align_corners)."""
    current = t.shape[2] if direction == VERTICAL else t.shape[3]
    if current == size:
        return t
    return F.interpolate(t, size=kernel_shape(size, direction), mode="bilinear", align_corners=True)


class ParCOperator(nn.Module):
    """Dense (groups=1) ParC operator of ParC-ResNet50: learned PE + circular conv with a (K,1)/(1,K) kernel."""

    def __init__(self, dim: int, direction: str, size: int) -> None:
        super().__init__()
        self.direction = direction
        self.pe = nn.Parameter(torch.randn(1, dim, *kernel_shape(size, direction)) * 0.02)
        self.conv = nn.Conv2d(dim, dim, kernel_shape(size, direction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(circular_extend(x + self.pe, self.direction))
