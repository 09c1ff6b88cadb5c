"""The one vocabulary of precisions and quantization modes; each runtime declares the ones it offers."""

from __future__ import annotations

from enum import StrEnum

from fat_deploy.errors import ArgumentError


class Precision(StrEnum):
    """A precision or quantization mode, always named explicitly (never one "int8")."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantized at run time
    INT8_WEIGHTS = "int8-weights"  # int8 weights, float compute
    INT8_STATIC = "int8-static"  # int8 weights and activations, calibrated
    W8A8 = "w8a8"  # Core ML: int8 weights and activations, calibrated on the PyTorch side
    PALETTIZE_4 = "palettize-4"
    PALETTIZE_6 = "palettize-6"
    PALETTIZE_8 = "palettize-8"
    INT4_BLOCK = "int4-block"

    @property
    def quantized(self) -> bool:
        return self not in (Precision.FP32, Precision.FP16)

    @property
    def calibrated(self) -> bool:
        """Needs calibration images (activation ranges measured on data)."""
        return self in (Precision.INT8_STATIC, Precision.W8A8)


PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)


def parse_precision(value: str) -> Precision:
    """``value`` as a :class:`Precision`; an unknown name is a one-line error listing the known ones."""
    if value not in PRECISIONS:
        raise ArgumentError(f"unknown precision {value!r}: known are {', '.join(PRECISIONS)}")
    return Precision(value)
QUANTIZED = frozenset(p.value for p in Precision if p.quantized)
CALIBRATED: tuple[str, ...] = tuple(p.value for p in Precision if p.calibrated)
