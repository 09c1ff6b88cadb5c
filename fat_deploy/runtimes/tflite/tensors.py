"""Float values to and from a LiteRT tensor's dtype (quantized with its scale and zero point when integer)."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_input_dtype(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float values as the input tensor wants them: as is, or quantized with its scale/zero point."""
    dtype = detail["dtype"]
    if dtype == np.float32:
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    quantized: np.ndarray = np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)
    return quantized


def from_output_dtype(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Output tensor values as float (dequantized when the output is integer)."""
    if detail["dtype"] == np.float32:
        return values.copy()
    scale, zero_point = detail["quantization"]
    dequantized: np.ndarray = (values.astype(np.float32) - zero_point) * scale
    return dequantized
