"""OpenVINO IR (``model.xml`` + ``model.bin`` in one artifact folder) through ``openvino.convert_model`` of the deploy
form with a static input shape, and int8 through NNCF post-training quantization.

``fp32`` keeps float32 weights (``save_model`` compresses to float16 unless told not to); ``fp16`` stores float16
weights, which the CPU plugin decompresses and computes in float32 when asked to (see ``session``), and GPU/NPU
plugins compute in f16. ``int8-static`` is ``nncf.quantize`` with the transformer model type and the mixed preset
(symmetric int8 weights, asymmetric activations; SmoothQuant and fast bias correction as NNCF applies them),
calibrated on the same images as the other static modes (https://github.com/openvinotoolkit/nncf).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fat_deploy.common.calibration import calibration_batch, requested_size
from fat_deploy.common.files import size_of
from fat_deploy.contract.coverage import Coverage
from fat_deploy.contract.formats import Calibration, Conversion, ExportFormat, ExportRequest
from fat_deploy.contract.timing import artifact_latency
from fat_deploy.precision import Precision
from fat_deploy.runtimes.openvino.coverage import openvino_coverage
from fat_deploy.runtimes.openvino.guide import guide
from fat_deploy.runtimes.openvino.session import OpenVinoBackend
from fat_deploy.runtimes.openvino.standalone import (
    MODEL_BIN,
    MODEL_XML,
    PRECISION_HINT,
    every_output,
    openvino_module,
)

NNCF_DEFAULTS = ("NNCF defaults: min/max of the weights, the mean over images of each image's activation min/max, "
                 "SmoothQuant, fast bias correction")


def to_openvino(request: ExportRequest) -> Any:
    """The converted model, with the request's input shape fixed (no shape arithmetic left for run time)."""
    shape = [request.batch, 3, *request.img_size]
    with torch.no_grad():
        return openvino_module().convert_model(request.model.eval(), example_input=torch.randn(*shape), input=shape)


def save_ir(model: Any, folder: Path, fp16_weights: bool) -> None:
    folder.mkdir()
    openvino_module().save_model(model, str(folder / MODEL_XML), compress_to_fp16=fp16_weights)


def quantize_nncf(model: Any, request: ExportRequest) -> tuple[Any, Calibration, dict[str, Any]]:
    openvino_module()  # first: NNCF reads openvino-telemetry when imported
    import nncf

    samples, sources = calibration_batch(request.spec, request.img_size, request.options.get("calibration"),
                                         requested_size(request.options))
    method = request.options.get("calibration_method")
    advanced = nncf.AdvancedQuantizationParameters()
    if method == "minmax":  # as the other runtimes' static modes calibrate
        advanced.activations_range_estimator_params = nncf.quantization.range_estimator.RangeEstimatorParametersSet.MINMAX
    batches = [samples[i:i + request.batch] for i in range(0, len(samples) - request.batch + 1, request.batch)]
    # The stem (ModelSpec.stem) stays float: on the photo-patches test bed (64 px, 544 held-out images) NNCF's file
    # lost 3.1 points of top-1 with it int8 (see the README's quantization table).
    stem = request.spec.stem
    ignored = nncf.IgnoredScope(patterns=[rf".*\b{stem}\..*"], validate=False) if stem else nncf.IgnoredScope()
    quantized = nncf.quantize(model, nncf.Dataset(batches), preset=nncf.QuantizationPreset.MIXED,
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches),
                              advanced_parameters=advanced, ignored_scope=ignored)
    details: dict[str, Any] = {
        "quantizer": f"nncf.quantize (NNCF {nncf.__version__})",
        "scheme": "static: symmetric int8 weights, asymmetric int8 activations (mixed preset, transformer model "
                  "type); float32 I/O"}
    if stem:
        details["float_stem"] = {"module": stem, "why": "the convolutions that read the image lose most in int8"}
    calibration = Calibration(method="minmax" if method == "minmax" else NNCF_DEFAULTS, samples=len(samples),
                              images=sources)
    return quantized, calibration, details


def is_ir_folder(path: Path) -> bool:
    """An artifact folder as fat-export writes it: the IR pair, regular files, nothing else."""
    if path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    return sorted(e.name for e in entries) == [MODEL_BIN, MODEL_XML] and all(
        e.is_file() and not e.is_symlink() for e in entries)


class OpenVinoFormat(ExportFormat):
    backend = OpenVinoBackend()
    name = "openvino"
    suffix = ".openvino"
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8_STATIC)
    runtime = f"openvino (CPU plugin, {PRECISION_HINT} inference precision)"
    converter_modules = ("openvino", "nncf")
    extra = "openvino"
    bundle_platform = "edge"
    float16_on_devices = "OpenVINO's GPU and NPU plugins (f16 inference precision by default)"
    intermediates_reader = "OpenVINO's CPU plugin, every op output added to the model's outputs"

    def is_artifact(self, path: Path) -> bool:
        return is_ir_folder(path)

    def coverage(self, path: Path) -> Coverage:
        return openvino_coverage(path)

    def intermediate_tensors(self, path: Path, request: ExportRequest, image: np.ndarray) -> list[np.ndarray] | None:
        return every_output(path, image)

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return guide(file_name, manifest)

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        return {
            "input": {"index": 0, "shape": [request.batch, 3, *request.img_size], "dtype": "float32", "layout": "NCHW",
                      "file": MODEL_XML},
            "output": {"index": 0, "shape": [request.batch, request.num_classes], "dtype": "float32",
                       "meaning": "logits"},
        }

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        model = to_openvino(request)
        conversion = Conversion(details={
            "converter": "openvino.convert_model (static input shape)",
            "weights": "float16 (compress_to_fp16)" if request.precision == Precision.FP16 else "float32",
            "inference_precision_hint": f"{PRECISION_HINT}: set at load (an IR cannot carry it; without it CPUs with "
                                        "AVX512_BF16/AMX run bfloat16)"})
        if request.precision == Precision.INT8_STATIC:
            quantized, conversion.calibration, details = quantize_nncf(model, request)
            conversion.details.update(details)
            save_ir(quantized, path, fp16_weights=False)
            self._quantization_cost(conversion, request, model, path)
        else:
            save_ir(model, path, fp16_weights=request.precision == Precision.FP16)
        return conversion

    @staticmethod
    def _quantization_cost(conversion: Conversion, request: ExportRequest, model: Any, path: Path) -> None:
        """Size and speed of the int8 IR against the float32 IR of the same model, into ``conversion``."""
        with tempfile.TemporaryDirectory(dir=path.parent) as folder:
            float_path = Path(folder) / "float"
            save_ir(model, float_path, fp16_weights=False)
            conversion.float_size_bytes = size_of(float_path)
            conversion.latency = artifact_latency(OpenVinoFormat.backend, float_path, path, request.img_size,
                                                  request.batch)
