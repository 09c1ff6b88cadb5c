"""FAT's norms made safe for float16 accumulation, by an exact rewrite.

FAT normalises over (C, H, W): 100,352 values per image at stage 1 of FAT-B0 at 224 px. A device kernel that sums
their squares in float16 (65504 at most) overflows as soon as their mean square exceeds 0.65; the variance becomes
inf and the norm silently outputs zeros (measured in the simulation of :mod:`fat_deploy.common.fp16`: FAT-B0's
deploy form, max relative difference 0.12 in float16 accumulation). The rewrite multiplies each norm's input by a
power of two before its statistics (``ChannelSpatialNorm.input_scale``, eps scaled by its square): the function is
unchanged and exactly so in binary floating point, but the sums shrink by the scale (squared for the variance).

Each norm's scale is chosen from its inputs on sample images: the largest power of two (at most 1) that keeps both
the sum of its inputs' magnitudes and the sum of their squares over the whole normalised extent under 65504 /
``headroom`` (conservative for any order or hierarchy of summation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from fat_deploy.models.deploy import ChannelSpatialNorm

FLOAT16_MAX = 65504.0
HEADROOM = 16.0  # the scaled sums stay 16x under float16's largest value on the sample images


def _power_of_two_at_most(value: float) -> float:
    return 1.0 if value >= 1.0 else 2.0 ** math.floor(math.log2(max(value, 2.0**-24)))


@torch.no_grad()
def scale_norms_for_float16(model: nn.Module, inputs: torch.Tensor, headroom: float = HEADROOM) -> dict[str, float]:
    """Set ``input_scale`` on every :class:`ChannelSpatialNorm` of ``model`` (in place) from its inputs on ``inputs``;
    returns the scale chosen per norm (1.0 where none is needed)."""
    sums: dict[str, tuple[float, float]] = {}
    handles = []

    def record(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].double().flatten(1)
            magnitude, squares = float(x.abs().sum(1).max()), float((x * x).sum(1).max())
            previous = sums.get(name, (0.0, 0.0))
            sums[name] = (max(previous[0], magnitude), max(previous[1], squares))
        return hook

    norms = {name: module for name, module in model.named_modules() if isinstance(module, ChannelSpatialNorm)}
    for name, norm in norms.items():
        norm.input_scale = 1.0
        handles.append(norm.register_forward_pre_hook(record(name)))
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    limit = FLOAT16_MAX / headroom
    scales: dict[str, float] = {}
    for name, norm in norms.items():
        magnitude, squares = sums.get(name, (0.0, 0.0))
        bound = min(limit / magnitude if magnitude else 1.0, math.sqrt(limit / squares) if squares else 1.0)
        norm.input_scale = scales[name] = _power_of_two_at_most(bound)
    return scales
