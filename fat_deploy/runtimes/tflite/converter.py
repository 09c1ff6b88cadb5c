"""TFLite through litert-torch (no TensorFlow), run with the LiteRT interpreter (ai-edge-litert)."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.common.calibration import calibration_batch, requested_size, verification_inputs
from fat_deploy.common.explain import EXPLAIN_METHOD, explain_inputs, report
from fat_deploy.common.verify import PROBABILITY_FLOOR
from fat_deploy.contract.coverage import Coverage
from fat_deploy.contract.formats import (
    AppClassifier,
    Calibration,
    Conversion,
    Explanation,
    ExportFormat,
    ExportRequest,
    UnsupportedOptionError,
    explain_option,
    flag_of,
    keep_float_option,
    option,
    require_module,
)
from fat_deploy.contract.reuse import reuse_key, reused
from fat_deploy.contract.timing import artifact_latency
from fat_deploy.errors import FatDeployError
from fat_deploy.models.deploy import litert_form
from fat_deploy.precision import Precision
from fat_deploy.runtimes.tflite.app_form import (
    ClassifierMetadata,
    MediaPipeClassifier,
    attach_metadata,
    mediapipe_check,
    mediapipe_classifier,
    read_metadata,
    to_app_input,
)
from fat_deploy.runtimes.tflite.coverage import tflite_coverage
from fat_deploy.runtimes.tflite.explain import every_tensor, explain_tflite
from fat_deploy.runtimes.tflite.guide import guide
from fat_deploy.runtimes.tflite.session import TFLiteBackend
from fat_deploy.version import __version__

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # quiet the converter's native INFO lines
os.environ.setdefault("GLOG_minloglevel", "2")


def op_histogram(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(str(path))._get_ops_details()
    return dict(Counter(op["op_name"] for op in details).most_common())


def non_builtin_ops(ops: dict[str, int]) -> list[str]:
    """Flex (TensorFlow) and custom ops: they fail in a plain LiteRT runtime."""
    return sorted(op for op in ops if op.startswith("Flex") or op.upper() == "CUSTOM" or "DELEGATE" in op.upper())


def pattern_regex(pattern: str) -> str:
    """A --keep-float pattern (substring, ``*`` wildcards) as the regex ai-edge-quantizer matches op names with."""
    return ".*" + ".*".join(re.escape(part) for part in pattern.split("*")) + ".*"


def check_keep_float_matches(path: Path, patterns: list[str]) -> None:
    """Refuse --keep-float patterns that match no tensor of the float graph (they would be silently ignored)."""
    if not patterns:
        return
    from ai_edge_litert.interpreter import Interpreter

    names = [detail["name"] for detail in Interpreter(str(path)).get_tensor_details()]
    if unmatched := [p for p in patterns if not any(re.fullmatch(pattern_regex(p), name) for name in names)]:
        example = next((name for name in names if ";" not in name and "/" in name), names[-1] if names else "")
        raise UnsupportedOptionError(
            f"--keep-float {' '.join(unmatched)} matches no tensor of the TFLite graph (names such as {example!r}; "
            "--explain lists them)")


# int8-static keeps these op types float: XNNPACK (LiteRT's CPU path) has no int8 kernel for them as FAT uses
# them, so quantized they ran outside the delegate, between quantize/dequantize pairs. FAT-B0 at 224 px, one run
# (AMD EPYC family 25 model 17, 1 thread, ai-edge-litert 2.3.0), fp32 24.8 ms: everything int8 35.5 ms (0.70x);
# BATCH_MATMUL, SOFTMAX, GELU float 20.6 ms (1.20x); and RSQRT, SUB (LayerNorm's) float 15.6 ms (1.59x).
# A float SOFTMAX also keeps --mediapipe scores exact (int8 probabilities would zero every small score).
# MEAN, MUL, ADD: the rest of every norm's statistics (mean of squares, variance + eps). Quantized, the variance's
# `+ eps` ADD has an int8 eps whose scale is 1e-4 of the output's (or 0): outside the [2^-10, 2^8) input/output scale
# ratio XNNPACK's int8 ADD takes, so each of FAT-B0's 26 norms left one ADD outside the delegate (27 partitions), and
# the int8 mean of squares rounds small variances away. Photo-patches test bed (64 px, 544 held-out images; AMD EPYC
# family 26 model 2): top-1 drop 8.6 points with them int8, 2.6 float (one partition, 1.62x fp32 speed at 64 px).
FLOAT_IN_INT8_STATIC = ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT", "SUB", "MEAN", "MUL", "ADD")
FLOAT_OPS_REASON = ("no XNNPACK int8 kernel for them here (quantized, they ran outside the delegate: FAT-B0 0.70x -> "
                    "1.59x the fp32 speed when kept float), and the norms' statistics (an int8 `+ eps` is outside "
                    "XNNPACK's int8 ADD scale range and rounds the variance; 8.6 -> 2.6 points top-1 drop)")
# ... and the model's stem (ModelSpec.stem: the convolutions that read the image) stays float unless --int8-stem:
# on the same test bed, the drop left with the ops above float was 2.6 points, -0.6 (a gain) with the stem float too,
# for 1.5% of the file size; 1.55x fp32 speed at 224 px (one partition).
STEM_REASON = ("the convolutions that read the image lose most in int8 (test bed: top-1 drop 2.6 -> -0.6 points "
               "with them float, for 1.5% more bytes)")
MEDIAPIPE_SCORE_TOLERANCE = 1e-4  # MediaPipe vs its reference, absolute, on probabilities


@dataclass(frozen=True)
class TFLiteOptions:
    nhwc: bool = option("--nhwc", "tflite: NHWC input layout", default=False)
    int8_io: bool = option("--int8-io", "tflite int8-static: int8 input/output tensors (default: float32 I/O, "
                           "drops into apps unchanged)", default=False)
    mediapipe: bool = option("--mediapipe", "tflite: a file MediaPipe Tasks' ImageClassifier and the TFLite Task "
                             "Library load as it is: NHWC RGB input in [0, 1], normalisation inside, softmax "
                             "scores out, TFLite metadata with the labels", default=False)
    int8_stem: bool = option("--int8-stem", "tflite int8-static: quantize the model's stem too (default: float, "
                             "where int8 loses most)", default=False)
    keep_float: list[str] | None = keep_float_option()
    explain: bool = explain_option()


class TFLiteFormat(ExportFormat):
    backend = TFLiteBackend()
    name = "tflite"
    suffix = ".tflite"
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8_DYNAMIC, Precision.INT8_WEIGHTS, Precision.INT8_STATIC)
    conversion_weight = 3.0
    runtime = "ai-edge-litert"
    converter_modules = ("litert_torch", "ai_edge_litert")
    extra = "tflite"
    Options = TFLiteOptions
    artifact_tags = {"mediapipe": "mediapipe"}
    bundle_platform = "android"
    float16_on_devices = "LiteRT's GPU delegate and NNAPI when precision loss is allowed"
    intermediates_reader = "LiteRT with every tensor kept (its built-in kernels: XNNPACK keeps none)"
    runs_on_aarch64 = True
    app_option = "mediapipe"
    bundle_options = {"mediapipe": True}

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return guide(file_name, manifest)

    def check_options(self, precision: Precision, options: dict[str, Any]) -> None:
        super().check_options(precision, options)
        for name in ("int8_io", "int8_stem"):
            if options.get(name) and precision != "int8-static":
                raise UnsupportedOptionError(f"{flag_of(TFLiteOptions, name)} applies to int8-static only, not {precision}")
        if options.get("mediapipe"):
            if options.get("int8_io"):
                raise UnsupportedOptionError("--mediapipe keeps float32 input/output (MediaPipe normalises the "
                                             "image itself); leave --int8-io out")
            require_module("mediapipe", "--mediapipe", "apps")

    def outputs_probabilities(self, request: ExportRequest) -> bool:
        return bool(request.options.get("mediapipe"))

    @staticmethod
    def graph_inputs(request: ExportRequest, normalized: np.ndarray) -> np.ndarray:
        """Normalised NCHW images as the converted graph takes them (NHWC; in [0, 1] for --mediapipe)."""
        if request.options.get("mediapipe"):
            return to_app_input(normalized, request.spec.mean, request.spec.std)
        return normalized.transpose(0, 2, 3, 1) if request.nhwc else normalized

    def run(self, path: Path, request: ExportRequest, inputs: np.ndarray, batch: int) -> np.ndarray:
        """Logits; for --mediapipe, log-probabilities of the [0, 1] images (verification compares them with the
        reference's log-softmax, as strict as logits up to a per-image constant)."""
        if not request.options.get("mediapipe"):
            return super().run(path, request, inputs, batch)
        pixels = self.graph_inputs(request, inputs)
        log_probabilities: np.ndarray = np.log(np.maximum(self._probabilities(path, request, pixels, batch),
                                                       PROBABILITY_FLOOR))
        return log_probabilities

    def _probabilities(self, path: Path, request: ExportRequest, pixels: np.ndarray, batch: int) -> np.ndarray:
        """What a --mediapipe file outputs for NHWC images in [0, 1], run by the harness's LiteRT runner."""
        return super().run(path, request, np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), batch)  # runner: NCHW in

    def runtime_form(self, deployed: torch.nn.Module) -> torch.nn.Module:
        """LiteRT's CPU path is XNNPACK: ExecuTorch's form (tiled large depthwise kernels, reduced norms, rank-3
        attention) with the norms' channel mean kept in NHWC (:func:`litert_form`). FAT-B0, one run (AMD EPYC
        family 25 model 17, 1 thread, ai-edge-litert 2.3.0): 30.2 ms -> 24.4 ms; onnxruntime got slower with the
        XNNPACK form, so ONNX does not use it."""

        return litert_form(deployed)

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        import litert_torch
        from litert_torch import _config

        _config.config.show_progress = False  # fat-export draws its own progress
        model = request.model
        example = torch.randn(request.batch, 3, *request.img_size)
        if request.options.get("mediapipe"):
            model = MediaPipeClassifier(model, request.spec.mean, request.spec.std).eval()
            example = torch.rand(request.batch, *request.img_size, 3)
        elif request.nhwc:
            model = litert_torch.to_channel_last_io(model, args=[0])
            example = example.permute(0, 2, 3, 1).contiguous()
        key = reuse_key("litert-torch", model, example)
        path.write_bytes(reused(key, lambda: self._float_flatbuffer(model.eval(), example, path)))
        conversion = Conversion(details={"converter": "litert-torch", "runtime": "ai-edge-litert (XNNPACK)"})
        details = conversion.details
        if request.precision != "fp32":
            conversion.merge(self._quantize(path, request))
        ops = op_histogram(path)
        details.update({"ops": ops, "nodes": sum(ops.values()), "io": self._io_types(path)})
        if bad := non_builtin_ops(ops):
            raise RuntimeError(f"TFLite graph needs non-builtin ops {bad}; only builtin ops are allowed")
        if request.options.get("mediapipe"):
            details["mediapipe"] = check = self._attach_and_check(request, path)
            conversion.notes.append(f"MediaPipe ImageClassifier loads it: top-5 and scores match {check['reference']} "
                                    f"on {check['images']} photos")
        return conversion

    @staticmethod
    def _float_flatbuffer(model: nn.Module, example: torch.Tensor, path: Path) -> bytes:
        """litert-torch's float conversion of ``model``, written through ``path`` and returned as bytes."""
        import litert_torch

        with torch.no_grad():
            litert_torch.convert(model, (example,)).export(str(path))
        return path.read_bytes()

    def _attach_and_check(self, request: ExportRequest, path: Path) -> dict[str, Any]:
        """Write the metadata and labels into the file, then classify the shipped photos with MediaPipe and compare
        with PyTorch (fp32) or with LiteRT running the same file (other precisions)."""

        labels = request.class_names
        attach_metadata(path, ClassifierMetadata(
            name=request.model_name, version=f"{request.precision}, fat-deploy {__version__}",
            description=f"{request.model_name} image classifier ({request.spec.source}); {len(labels)} classes, "
                        f"{request.img_size[0]}x{request.img_size[1]} RGB input",
            author="fat-deploy", license="Weights: as licensed by their owner. FAT architecture: qhfan/FAT.",
            labels=labels))
        written = read_metadata(path)
        if written.get("labels") != labels:
            raise RuntimeError("the labels file read back from the TFLite metadata differs from the labels")
        photos, _ = verification_inputs(request.spec, request.img_size)
        pixels = np.round(self.graph_inputs(request, photos) * 255.0).astype(np.uint8)
        if request.precision == "fp32":
            reference = "PyTorch (faithful model)"
            with torch.no_grad():
                wrapped = MediaPipeClassifier(request.reference, request.spec.mean, request.spec.std).eval()
                expected = wrapped(torch.from_numpy(pixels.astype(np.float32) / 255.0)).numpy()
        else:
            reference = "LiteRT running the same file"
            try:
                expected = self._probabilities(path, request, pixels.astype(np.float32) / 255.0, 1)
            except FatDeployError as error:  # the file we just wrote does not load: a conversion failure
                raise RuntimeError(str(error)) from None
        check = mediapipe_check(path, pixels, expected, MEDIAPIPE_SCORE_TOLERANCE)
        if not check["passed"]:
            raise RuntimeError(f"MediaPipe ImageClassifier disagrees with {reference}: {'; '.join(check['failures'])}")
        return {**check, "reference": reference, "metadata": {k: v for k, v in written.items() if k != "labels"}}

    @staticmethod
    def _quantize(path: Path, request: ExportRequest) -> Conversion:
        """Rewrite the float .tflite at ``path`` with an ai-edge-quantizer recipe for the mode."""
        from ai_edge_quantizer import qtyping, quantizer, recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        engine = quantizer.Quantizer(str(path))
        conversion = Conversion(details={"quantizer": "ai-edge-quantizer"}, float_size_bytes=path.stat().st_size)
        details = conversion.details
        if request.precision == "fp16":
            engine.add_weight_only_config(
                regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                algorithm_key=AlgorithmName.FLOAT_CASTING,
            )
            details["scheme"] = "float16 weights (fp32 compute, DEQUANTIZE at load)"
        else:
            recipes = {"int8-dynamic": (recipe.dynamic_wi8_afp32,
                                        "dynamic range: int8 weights, activations quantized at run time"),
                       "int8-weights": (recipe.weight_only_wi8_afp32, "weight-only int8 (dequantized to fp32 compute)"),
                       "int8-static": (recipe.static_wi8_ai8, "static W8A8 with float32 I/O")}
            make_recipe, details["scheme"] = recipes[request.precision]
            engine.load_quantization_recipe(make_recipe())
            if request.precision == "int8-static":
                for op in FLOAT_IN_INT8_STATIC:
                    engine.update_quantization_recipe(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                                      algorithm_key=AlgorithmName.NO_QUANTIZE)
                details["float_ops"] = {"ops": list(FLOAT_IN_INT8_STATIC), "why": FLOAT_OPS_REASON}
            if request.precision == "int8-static" and not request.options.get("int8_io"):
                for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                    engine.update_quantization_recipe(regex=".*", operation_name=boundary,
                                                      algorithm_key=AlgorithmName.NO_QUANTIZE)
            elif request.precision == "int8-static":
                details["scheme"] = "static W8A8 with int8 input/output tensors (--int8-io)"
            check_keep_float_matches(path, request.options.get("keep_float") or [])
            if request.precision == "int8-static" and request.spec.stem and not request.options.get("int8_stem"):
                engine.update_quantization_recipe(regex=f".*_{re.escape(request.spec.stem)}/.*",
                                                  operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                                  algorithm_key=AlgorithmName.NO_QUANTIZE)
                details["float_stem"] = {"module": request.spec.stem, "why": STEM_REASON}
            for pattern in request.options.get("keep_float") or []:
                engine.update_quantization_recipe(regex=pattern_regex(pattern),
                                                  operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                                  algorithm_key=AlgorithmName.NO_QUANTIZE)
            if request.options.get("keep_float"):
                details["kept_float_patterns"] = list(request.options["keep_float"])
        calibration_result, sources = None, list[str]()
        if request.precision == "int8-static":
            samples, sources = calibration_batch(request.spec, request.img_size, request.options.get("calibration"),
                                                 requested_size(request.options))
            samples = TFLiteFormat.graph_inputs(request, samples)
            signature, input_name = "serving_default", "args_0"
            calibration_result = engine.calibrate({signature: [{input_name: s[None]} for s in samples]})
            conversion.calibration = Calibration(method="minmax", samples=len(samples), images=sources)
        result = engine.quantize(calibration_result, enable_progress_report=False)
        float_path = path.with_name(f"{path.stem}.float{path.suffix}")
        path.rename(float_path)
        result.export_model(str(path))
        if request.precision != "fp16":
            conversion.latency = artifact_latency(TFLiteFormat.backend, float_path, path, request.img_size, request.batch)
        if request.options.get("explain"):
            inputs, names = explain_inputs(request, sources)
            inputs = TFLiteFormat.graph_inputs(request, inputs)
            errors = explain_tflite(float_path, path, inputs)
            conversion.explanation = Explanation(images=names, method=EXPLAIN_METHOD, worst_layers=report(errors),
                                                 ranking=[error.name for error in errors])
        float_path.unlink()
        return conversion

    @staticmethod
    def _io_types(path: Path) -> dict[str, Any]:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(str(path))
        def describe(d: dict[str, Any]) -> dict[str, Any]:
            return {"dtype": np.dtype(d["dtype"]).name,
                    "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}
        return {"input": describe(interpreter.get_input_details()[0]),
                "output": describe(interpreter.get_output_details()[0])}

    def coverage(self, path: Path) -> Coverage:
        return tflite_coverage(path)

    def app_classifier(self, path: Path) -> AppClassifier | None:
        return mediapipe_classifier(path)

    def intermediate_tensors(self, path: Path, request: ExportRequest, image: np.ndarray) -> list[np.ndarray] | None:
        return None if request.options.get("mediapipe") else every_tensor(path, image)

    def inspect(self, path: Path, request: ExportRequest) -> list[str]:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(str(path))
        (source,) = interpreter.get_input_details()
        expected = self.io_spec(request)["input"]["shape"]
        if list(source["shape"]) != expected:
            return [f"input shape {list(source['shape'])} != expected {expected}"]
        return []

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        height, width = request.img_size
        if request.options.get("mediapipe"):
            return {
                "input": {"name": "serving_default_args_0", "index": 0, "shape": [request.batch, height, width, 3],
                          "dtype": "float32", "layout": "NHWC",
                          "values": "RGB / 255 in [0, 1]; mean/std applied inside the graph (metadata: "
                                    "NormalizationOptions mean 0, std 255)"},
                "output": {"index": 0, "shape": [request.batch, request.num_classes], "dtype": "float32",
                           "meaning": "softmax probabilities (labels in the file's metadata)"},
            }
        shape = [request.batch, height, width, 3] if request.nhwc else [request.batch, 3, height, width]
        return {
            "input": {"name": "serving_default_args_0", "index": 0, "shape": shape, "dtype": "float32",
                      "layout": "NHWC" if request.nhwc else "NCHW"},
            "output": {"index": 0, "shape": [request.batch, request.num_classes], "dtype": "float32", "meaning": "logits"},
        }

