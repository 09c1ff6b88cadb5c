"""onnxruntime quantization passes, each with an explicit name.

* ``int8-dynamic``: MatMul/Gemm weights int8, activations quantized at run time (convolutions
  stay float: dynamic ConvInteger was measured several times slower than float Conv on x86 with
  onnxruntime 1.32; see docs/DESIGN.md).
* ``int8-static``: QDQ, per-channel int8 weights, uint8 activations (signed activations are
  slower on x86), calibrated on real images with MinMax or Percentile.

Both keep weights to 7 bits (onnxruntime's ``reduce_range``) unless ``--int8-full-range``. On x86 CPUs without VNNI
(AVX2) onnxruntime multiplies uint8 activations by int8 weights with ``vpmaddubsw``, which adds each pair of products
in int16 and saturates: 255 x 127 x 2 does not fit, 255 x 64 x 2 does (onnxruntime's quantization guide,
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html). With 7-bit weights a file computes
the same integers on AVX2 and AVX-512 VNNI (measured) and ARM (whose kernels widen too), so the accuracy measured
where it is exported holds on all of them; on the test bed 8-bit weights lost 0.92 points under AVX2 kernels and
gained 0.18 under VNNI ones, 7-bit ones lost 0.37 under both (``benchmarks/isa_cap.py``; README).
"""

from __future__ import annotations

import fnmatch
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.common.calibration import calibration_batch, requested_size
from fat_deploy.common.explain import EXPLAIN_METHOD, explain_inputs, report
from fat_deploy.contract.formats import Calibration, Conversion, Explanation, ExportRequest, UnsupportedOptionError
from fat_deploy.contract.timing import artifact_latency
from fat_deploy.precision import Precision
from fat_deploy.runtimes.onnx.explain import explain_onnx
from fat_deploy.runtimes.onnx.session import OnnxRuntimeBackend

ONNX_QUANTIZED = (Precision.INT8_DYNAMIC, Precision.INT8_STATIC)
# No "entropy": onnxruntime 1.32's quantize_static builds its Entropy calibrator with 128 histogram bins for 128
# quantized bins, so the KL search has one candidate (the full range) and its files were byte-identical to MinMax's
# (found on the test bed); quantize_static passes no option that changes the bins.
CALIBRATION_METHODS = ("minmax", "percentile")
# Weighted layers only: quantizing the attention matmuls and softmax (activation x activation)
# costs most of the accuracy for little speed (see benchmarks).
STATIC_OP_TYPES = ["Conv", "Gemm"]


class _BatchReader:
    """Feeds calibration inputs one at a time (the onnxruntime CalibrationDataReader protocol)."""

    def __init__(self, inputs: np.ndarray, input_name: str) -> None:
        self._feeds = iter([{input_name: sample[None]} for sample in inputs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # not needed for one pass
        pass


def _excluded_nodes(model_path: Path, patterns: list[str]) -> list[str]:
    import onnx

    nodes = onnx.load(str(model_path)).graph.node
    def matches(node: Any, pattern: str) -> bool:
        return fnmatch.fnmatch(node.name, pattern) or pattern in node.name
    if unmatched := [p for p in patterns if not any(matches(node, p) for node in nodes)]:
        raise UnsupportedOptionError(
            f"--keep-float {' '.join(unmatched)} matches no node of the ONNX graph (names are module paths such as "
            f"{nodes[0].name!r}; --explain lists them)")
    matched = [node for node in nodes if any(matches(node, p) for p in patterns)]
    # quantize_dynamic first splits a Gemm into MatMul + Add named "<gemm>_MatMul": exclude that name too.
    return [name for node in matched for name in (node.name, *([f"{node.name}_MatMul"] if node.op_type == "Gemm" else []))]


def quantize(request: ExportRequest, float_model: Any, path: Path, input_name: str) -> Conversion:
    """Quantize ``float_model`` (a simplified fp32 ModelProto) into ``path``; what the manifest records of it."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options = request.options
    method = (options.get("calibration_method") or "minmax").lower()
    if method not in CALIBRATION_METHODS:
        raise UnsupportedOptionError(f"--calibration-method must be one of {', '.join(CALIBRATION_METHODS)}")
    keep_float = list(options.get("keep_float") or [])
    with tempfile.TemporaryDirectory() as folder:
        float_path, prepared = Path(folder) / "float.onnx", Path(folder) / "prepared.onnx"
        onnx.save(float_model, float_path)
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        excluded = _excluded_nodes(prepared, keep_float) if keep_float else []
        full_range = bool(options.get("int8_full_range"))
        bits = 8 if full_range else 7
        result = Conversion(details={"quantizer": "onnxruntime.quantization", "kept_float_nodes": excluded,
                                     "weight_bits": bits},
                            float_size_bytes=float_path.stat().st_size)
        details = result.details
        sources: list[str] = []
        if request.precision == "int8-dynamic":
            quantize_dynamic(str(prepared), str(path), op_types_to_quantize=["MatMul", "Gemm"],
                             weight_type=QuantType.QInt8, per_channel=True, reduce_range=not full_range,
                             nodes_to_exclude=excluded)
            details["scheme"] = (f"dynamic: MatMul/Gemm int8 weights ({bits}-bit), activations quantized at run "
                                 "time; Conv float")
        else:
            calibration, sources = calibration_batch(
                request.spec, request.img_size, options.get("calibration"), requested_size(options)
            )
            quantize_static(
                str(prepared), str(path), _BatchReader(calibration, input_name), quant_format=QuantFormat.QDQ,
                per_channel=True, reduce_range=not full_range, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, op_types_to_quantize=STATIC_OP_TYPES,
                calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method],
                nodes_to_exclude=excluded,
            )
            details["scheme"] = f"static QDQ: per-channel int8 weights ({bits}-bit), uint8 activations"
            result.calibration = Calibration(method=method, samples=len(calibration), images=sources)
        result.latency = artifact_latency(OnnxRuntimeBackend(), prepared, path, request.img_size, request.batch)
        if options.get("explain"):
            inputs, names = explain_inputs(request, sources)
            result.explanation = Explanation(images=names, method=EXPLAIN_METHOD,
                                             worst_layers=report(explain_onnx(prepared, path, inputs, input_name)))
        return result
