"""ONNX: dynamo export at opset 20 (GELU as one node), single file, onnxsim-simplified."""

from __future__ import annotations

import ast
import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.common.calibration import sample_photos
from fat_deploy.contract.coverage import Coverage
from fat_deploy.contract.formats import (
    AppClassifier,
    Conversion,
    ExportFormat,
    ExportRequest,
    UnsupportedOptionError,
    explain_option,
    keep_float_option,
    option,
    require_module,
)
from fat_deploy.contract.reuse import reuse_key, reused
from fat_deploy.precision import Precision
from fat_deploy.runtimes.onnx.coverage import onnx_coverage, op_histogram
from fat_deploy.runtimes.onnx.explain import every_tensor
from fat_deploy.runtimes.onnx.guide import guide
from fat_deploy.runtimes.onnx.image_bytes import (
    BYTES_INPUT,
    PREPROCESSED,
    PROBABILITIES,
    add_image_bytes,
    encoded_photos,
    exif_orientation,
    image_bytes_check,
    model_part,
    session,
    shorter_side,
)
from fat_deploy.runtimes.onnx.quantize import CALIBRATION_METHODS, ONNX_QUANTIZED, quantize
from fat_deploy.runtimes.onnx.session import OnnxRuntimeBackend
from fat_deploy.runtimes.onnx.web_page import page_section, write_web_page

OPSET = 20
IMAGE_BYTES_PHOTOS = 4  # shipped photos, each encoded as JPEG and PNG, for the --image-bytes check
IMAGE_BYTES_TOLERANCE = 1e-4  # probabilities, absolute
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def name_nodes_by_module(graph: Any) -> None:
    """Name nodes after the PyTorch module that produced them (``layers.0.blocks.1.cpe/conv2d_7``)
    and drop the exporter's per-node metadata (stack traces with local file paths)."""
    taken: set[str] = set()
    for node in graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes:
            parts = [part for part in ast.literal_eval(scopes) if part]
            candidate = "/".join(parts[-2:]) if parts else node.name
            node.name = candidate if candidate not in taken else f"{candidate}_{len(taken)}"
        taken.add(node.name)
        del node.metadata_props[:]


def topologically_sorted(graph: Any) -> None:
    """Reorder ``graph.node`` so every node follows its inputs' producers (the fp16 pass appends
    its input casts at the end, which the ONNX checker rejects)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise RuntimeError("ONNX graph has a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


@dataclass(frozen=True)
class OnnxOptions:
    dynamic_batch: bool = option("--dynamic-batch", "onnx: dynamic batch axis", default=False)
    image_bytes: bool = option("--image-bytes", "onnx: take a JPEG/PNG file's bytes, return probabilities "
                               "(onnxruntime-extensions pre/post-processing; apps register its custom-op library)",
                               default=False)
    keep_float: list[str] | None = keep_float_option()
    explain: bool = explain_option()
    int8_full_range: bool = option("--int8-full-range", "onnx int8 modes: 8-bit weights (default 7-bit: onnxruntime's "
                                   "x86 kernels for CPUs without VNNI saturate 8-bit products; see README)",
                                   default=False)


class OnnxFormat(ExportFormat):
    backend = OnnxRuntimeBackend()
    name = "onnx"
    suffix = ".onnx"
    precisions = (Precision.FP32, Precision.FP16, *ONNX_QUANTIZED)
    runtime = "onnxruntime"
    converter_modules = ("onnx", "onnxscript", "onnxsim", "onnxruntime")
    extra = "onnx"
    Options = OnnxOptions
    calibration_methods = CALIBRATION_METHODS
    artifact_tags = {"image_bytes": "image-bytes"}
    bundle_platform = "web"
    intermediates_reader: ClassVar[str | None] = "onnxruntime, every node output added to the graph's outputs"
    runs_on_aarch64 = True
    app_option: ClassVar[str | None] = "image_bytes"

    def coverage(self, path: Path) -> Coverage:
        return onnx_coverage(path)

    def intermediate_tensors(self, path: Path, request: ExportRequest, image: np.ndarray) -> list[np.ndarray] | None:
        return None if request.options.get("image_bytes") else every_tensor(path, image)

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return guide(file_name, manifest) + "\n\n" + page_section()

    def write_bundle_extras(self, folder: Path, manifest: dict[str, Any]) -> list[str]:
        return write_web_page(folder, manifest)

    def app_classifier(self, path: Path) -> AppClassifier | None:
        runner = session(path)
        return AppClassifier(
            client="onnxruntime + onnxruntime-extensions", decode=lambda data: np.frombuffer(data, dtype=np.uint8),
            classify=lambda data: np.asarray(runner.run(None, {BYTES_INPUT: data})[0]),
            inside="JPEG/PNG decode, resize, crop, normalise, inference, softmax (all in the graph)")

    def check_options(self, precision: Precision, options: dict[str, Any]) -> None:
        super().check_options(precision, options)
        if options.get("int8_full_range") and precision not in ONNX_QUANTIZED:
            raise UnsupportedOptionError(f"--int8-full-range applies to int8-dynamic and int8-static only, not {precision}")
        if options.get("image_bytes"):
            if options.get("dynamic_batch"):
                raise UnsupportedOptionError("--image-bytes takes one encoded image; leave --dynamic-batch out")
            require_module("onnxruntime_extensions", "--image-bytes", "apps")

    def run(self, path: Path, request: ExportRequest, inputs: np.ndarray, batch: int) -> np.ndarray:
        """Logits; for --image-bytes, of the classifier inside the file (its decode/resize/softmax parts are
        checked end to end on encoded photos at export)."""
        if not request.options.get("image_bytes"):
            return super().run(path, request, inputs, batch)

        runner = session(model_part(path, OUTPUT_NAME))
        return np.concatenate([runner.run([OUTPUT_NAME], {PREPROCESSED: inputs[i:i + 1]})[0] for i in range(len(inputs))])

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        import onnx

        # A dynamic batch needs an example batch >= 2, or torch.export specialises it to 1.
        example = torch.randn(2 if request.dynamic_batch else request.batch, 3, *request.img_size)
        dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if request.dynamic_batch else None
        key = reuse_key("torch.onnx+onnxsim", request.model, example, dynamic)
        graph, nodes_exported = reused(key, lambda: self._float_graph(request.model, example, dynamic, path))
        simplified = onnx.load_from_string(graph)
        if request.precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            simplified = convert_float_to_float16(simplified, keep_io_types=True)
            topologically_sorted(simplified.graph)
        quantization = Conversion()
        if request.precision in ONNX_QUANTIZED:
            quantized_path = path.with_suffix(".quant.onnx")
            quantization = quantize(request, simplified, quantized_path, INPUT_NAME)
            simplified = onnx.load(quantized_path)
            quantized_path.unlink()
        image_bytes = bool(request.options.get("image_bytes"))
        if image_bytes:
            if request.batch != 1:
                raise UnsupportedOptionError("--image-bytes takes one encoded image; leave --batch out")
            simplified = add_image_bytes(simplified, request, INPUT_NAME)
        for key, value in {
            "model": request.model_name, "precision": request.precision,
            "input_layout": "JPEG/PNG bytes" if image_bytes else "NCHW",
            "mean": ",".join(map(str, request.spec.mean)), "std": ",".join(map(str, request.spec.std)),
            "labels": json.dumps(request.class_names),  # class i's name (a JSON list), in every .onnx
        }.items():
            simplified.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(simplified)
        onnx.save(simplified, path)
        if image_bytes:
            check = self._image_bytes_check(request, path)
            return Conversion(
                details={"opset": OPSET, "exporter": "torch.onnx (dynamo) + onnxruntime-extensions pre/post-processing",
                         "nodes": len(simplified.graph.node), "ops": op_histogram(simplified), "image_bytes": check},
                notes=[f"image bytes in: top-5 and probabilities match {check['reference']} on "
                       f"{len(check['files'])} JPEG/PNG files",
                       f"EXIF orientation: {check['exif_orientation']}"]).merge(quantization)
        return Conversion(details={
            "opset": OPSET, "exporter": "torch.onnx (dynamo)", "simplifier": "onnxsim",
            "nodes_exported": nodes_exported, "nodes": len(simplified.graph.node),
            "ops": op_histogram(simplified),
            "io_dtype": "float32" + (" (float16 graph, float32 I/O)" if request.precision == "fp16" else ""),
        }).merge(quantization)

    @staticmethod
    def _float_graph(model: nn.Module, example: torch.Tensor, dynamic: dict[str, dict[int, str]] | None,
                     path: Path) -> tuple[bytes, int]:
        """The dynamo export of ``model``, its nodes named by module, simplified by onnxsim (serialized), and how many
        nodes the export had before simplification."""
        import onnx
        from onnxsim import simplify

        raw_path = path.with_suffix(".raw.onnx")
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            torch.onnx.export(
                model, (example,), raw_path, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=True,
                external_data=False, dynamic_axes=dynamic, verbose=False,
            )
        exported = onnx.load(raw_path)
        raw_path.unlink()
        name_nodes_by_module(exported.graph)
        nodes_exported = len(exported.graph.node)
        simplified, ok = simplify(exported)
        if not ok:
            raise RuntimeError("onnxsim could not validate the simplified graph")
        return simplified.SerializeToString(), nodes_exported

    def _image_bytes_check(self, request: ExportRequest, path: Path) -> dict[str, Any]:
        """Encoded shipped photos through the file; the reference sees the tensor the graph fed its model:
        PyTorch for fp32, the classifier part of the same file for other precisions."""

        files = encoded_photos([np.asarray(image.convert("RGB")) for _, image in sample_photos(IMAGE_BYTES_PHOTOS)])
        if request.precision == "fp32":
            reference = "PyTorch (faithful model)"

            def expected_of(tensor: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return torch.softmax(request.reference(torch.from_numpy(tensor)), dim=-1).numpy()
        else:
            reference = "the classifier part of the same file"
            inner = session(model_part(path, OUTPUT_NAME))

            def expected_of(tensor: np.ndarray) -> np.ndarray:
                logits = torch.from_numpy(inner.run([OUTPUT_NAME], {PREPROCESSED: tensor})[0])
                return torch.softmax(logits, dim=-1).numpy()
        runner = session(path, extra_outputs=(PREPROCESSED,))
        check = image_bytes_check(runner, files, expected_of, IMAGE_BYTES_TOLERANCE)
        if not check["passed"]:
            raise RuntimeError(f"image-bytes model disagrees with {reference}: {'; '.join(check['failures'])}")
        first_photo = np.asarray(sample_photos(1)[0][1].convert("RGB"))
        return {**check, "reference": reference, "exif_orientation": exif_orientation(runner, first_photo)}

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        if request.options.get("image_bytes"):
            return {
                "input": {"name": BYTES_INPUT, "shape": ["num_bytes"], "dtype": "uint8",
                          "values": f"the bytes of one JPEG or PNG file; decoded, shorter side resized to "
                                    f"{shorter_side(request)} (bilinear, antialiased), centre-cropped and normalised "
                                    "inside the graph",
                          "custom_ops": "onnxruntime-extensions (SessionOptions.register_custom_ops_library)"},
                "output": {"name": PROBABILITIES, "shape": [1, request.num_classes], "dtype": "float32",
                           "meaning": "softmax probabilities (labels: the model's 'labels' metadata property)"},
            }
        batch: int | str = "batch" if request.dynamic_batch else request.batch
        return {
            "input": {"name": INPUT_NAME, "shape": [batch, 3, *request.img_size], "dtype": "float32", "layout": "NCHW"},
            "output": {"name": OUTPUT_NAME, "shape": [batch, request.num_classes], "dtype": "float32", "meaning": "logits"},
        }

