"""What an ONNX file stores as its quantized weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def int8_weight_range(path: Path) -> tuple[int, int]:
    """Lowest and highest stored value of an ONNX file's int8 initializers (its quantized weights and their zero
    points; activations are uint8)."""
    values = [numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer
              if tensor.data_type == onnx.TensorProto.INT8]
    return int(min(np.min(v) for v in values)), int(max(np.max(v) for v in values))
