"""Core ML: an ML-program ``.mlpackage`` (fp32 or fp16 compute), image or tensor input.

The app-friendly variant takes an RGB ``ImageType`` (pixels scaled to [0, 1]; the model's
per-channel mean/std is applied inside the model, exactly, because Core ML's ImageType has only
one scale) and, with labels, is a classifier. The tensor variant takes the normalised NCHW tensor
and returns logits. Prediction needs macOS; elsewhere the package is inspected, not run.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.common.calibration import (
    batches,
    calibration_batch,
    requested_size,
    resize_contract,
    unbatch,
)
from fat_deploy.common.files import size_of
from fat_deploy.contract.coverage import Accelerator, Coverage
from fat_deploy.contract.formats import (
    Calibration,
    Conversion,
    ExportFormat,
    ExportRequest,
    RuntimeUnavailable,
    UnsupportedOptionError,
    option,
)
from fat_deploy.models.deploy import PixelNormalize
from fat_deploy.precision import Precision
from fat_deploy.runtimes.coreml.guide import guide
from fat_deploy.runtimes.coreml.package import check_package_paths, is_coreml_package
from fat_deploy.runtimes.coreml.session import CoreMLBackend
from fat_deploy.version import __version__

logging.getLogger("coremltools").setLevel(logging.ERROR)  # "Failed to load _MLModelProxy" on Linux

DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
# Weight compression on the converted ML program (fp16 compute), coremltools.optimize.coreml.
COMPRESSION_MODES = (Precision.INT8_WEIGHTS, Precision.PALETTIZE_4, Precision.PALETTIZE_6, Precision.PALETTIZE_8,
                     Precision.INT4_BLOCK)
# Weights and activations int8, quantized on the PyTorch side (activation calibration of an .mlpackage
# needs macOS to run it): coremltools.optimize.torch LinearQuantizer, observers only (no training).
ACTIVATION_MODES = (Precision.W8A8,)
MINIMUM_TARGET = {"int4-block": "iOS18", "w8a8": "iOS17"}
DEFAULT_TARGET = "iOS16"
INPUT_KINDS = ("image", "tensor")


def deployment_target(request: ExportRequest) -> str:
    """The minimum deployment target asked for, else the one the precision needs, else the default."""
    return request.options.get("minimum_deployment_target") or MINIMUM_TARGET.get(request.precision) or DEFAULT_TARGET


def ops_unavailable_on(op_types: set[str], target_name: str) -> list[str]:
    """MIL ops of the program that are not core Core ML ops at ``target_name`` (it would not load there).

    This is what the op check protects against: a program the target OS cannot run (an op from a newer
    opset, or a converter dialect / custom op). Which core ops appear (``batch_norm`` for a per-channel
    scale and shift, ``layer_norm``, ...) is the converter's choice and not a problem.
    """
    import coremltools as ct
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    target = getattr(ct.target, target_name)
    return sorted(op for op in op_types if target not in SSAOpRegistry.core_ops.get(op, {}))


@dataclass(frozen=True)
class CoreMLOptions:
    minimum_deployment_target: str | None = option(
        "--minimum-deployment-target", f"coreml: minimum deployment target (default {DEFAULT_TARGET})",
        choices=DEPLOYMENT_TARGETS)
    coreml_input: str | None = option(
        "--coreml-input", "coreml: 'image' (RGB ImageType + classifier, default) or 'tensor' (normalised NCHW, logits)",
        choices=INPUT_KINDS)


class CoreMLFormat(ExportFormat):
    backend = CoreMLBackend()
    name = "coreml"
    suffix = ".mlpackage"
    precisions = (Precision.FP32, Precision.FP16, *COMPRESSION_MODES, *ACTIVATION_MODES)
    conversion_weight = 2.0
    runtime = "coremltools (macOS only)"
    converter_modules = ("coremltools",)
    extra = "coreml"
    Options = CoreMLOptions
    bundle_platform = "ios"

    def is_artifact(self, path: Path) -> bool:
        return is_coreml_package(path)

    def coverage(self, path: Path) -> Coverage:
        """Core ML ops by type (from the spec, readable on Linux); which compute unit runs each op is Core ML's
        choice at load time on the device, so no accelerator share is claimed."""
        if path.is_dir():
            check_package_paths(path)
        ops = {op: n for op, n in self._op_histogram(path).items() if op != "const"}  # weights and shapes
        return Coverage(format="coreml", ops=ops, layout_transposes=ops.get("transpose", 0),
                        accelerators=[Accelerator(name="Core ML compute units", checked=False,
                                                  verdict="Core ML assigns CPU / GPU / Neural Engine per op when it "
                                                          "loads the model on Apple hardware")])

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return guide(file_name, manifest)

    @staticmethod
    def input_kind(request: ExportRequest | dict[str, Any]) -> str:
        options = request if isinstance(request, dict) else request.options
        kind = options.get("coreml_input") or "image"
        if kind not in INPUT_KINDS:
            raise UnsupportedOptionError(f"--coreml-input must be one of {', '.join(INPUT_KINDS)}, got {kind!r}")
        return kind

    def artifact_name(self, model_name: str, precision: Precision, options: dict[str, Any]) -> str:
        stem = super().artifact_name(model_name, precision, options)[: -len(self.suffix)]
        return f"{stem}_tensor{self.suffix}" if self.input_kind(options) == "tensor" else f"{stem}{self.suffix}"

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        import coremltools as ct

        needed = MINIMUM_TARGET.get(request.precision)
        target_name = deployment_target(request)
        if target_name not in DEPLOYMENT_TARGETS:
            raise UnsupportedOptionError(
                f"--minimum-deployment-target must be one of {', '.join(DEPLOYMENT_TARGETS)}"
            )
        if needed and DEPLOYMENT_TARGETS.index(target_name) < DEPLOYMENT_TARGETS.index(needed):
            raise UnsupportedOptionError(f"{request.precision} needs --minimum-deployment-target {needed} or later")
        kind = self.input_kind(request)
        shape = (request.batch, 3, *request.img_size)
        model: nn.Module = request.model
        conversion = Conversion()
        if request.precision in ACTIVATION_MODES:
            model, conversion = self._quantize_w8a8(request)
            conversion.simulation = model  # verified in its place where Core ML cannot run
        classifier = None
        if kind == "image":
            model = PixelNormalize(model, request.spec.mean, request.spec.std).eval()
            inputs = [ct.ImageType(name="image", shape=shape, scale=1 / 255.0, bias=[0.0, 0.0, 0.0],
                                   color_layout=ct.colorlayout.RGB)]
            if request.num_classes > 0:
                classifier = ct.ClassifierConfig(request.class_names)
        else:
            inputs = [ct.TensorType(name="input", shape=shape, dtype=np.float32)]
        with torch.no_grad():
            traced = torch.jit.trace(model, torch.rand(shape))  # type: ignore[no-untyped-call]  # torch leaves it untyped
        mlmodel = ct.convert(
            traced, inputs=inputs, outputs=None if classifier else [ct.TensorType(name="logits")],
            classifier_config=classifier, convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32 if request.precision == "fp32" else ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, target_name),
        )
        spec = request.spec
        mlmodel.author = "fat-deploy"
        mlmodel.license = "Weights: as licensed by their owner. FAT architecture: qhfan/FAT."
        mlmodel.short_description = (
            f"{request.model_name} ({spec.source}); input {kind} {request.img_size[0]}x{request.img_size[1]}"
        )

        mlmodel.version = f"fat-deploy {__version__}"
        for name, text in self._descriptions(request, kind, classifier is not None).items():
            if name in mlmodel.input_description:
                mlmodel.input_description[name] = text
            else:
                mlmodel.output_description[name] = text
        mlmodel.user_defined_metadata.update({
            "model": request.model_name,
            "input_size": "x".join(map(str, request.img_size)),
            "mean": ",".join(map(str, spec.mean)),
            "std": ",".join(map(str, spec.std)),
            "input": kind,
            "precision": request.precision,
            "tool_versions": f"torch {torch.__version__}, coremltools {ct.__version__}",
        })
        if request.precision in COMPRESSION_MODES:
            mlmodel, conversion = self._compress(mlmodel, request.precision, path)
        mlmodel.save(str(path))
        result = Conversion(details={"converter": "coremltools (torch.jit.trace)",
                                     "minimum_deployment_target": target_name, "input_kind": kind,
                                     "classifier": classifier is not None}).merge(conversion)
        result.details["ops"] = self._op_histogram(path)
        return result

    @staticmethod
    def _quantize_w8a8(request: ExportRequest) -> tuple[nn.Module, Conversion]:
        """Int8 weights (per channel) and activations, calibrated on images in PyTorch, before conversion."""
        from coremltools.optimize.torch.quantization import (
            LinearQuantizer,
            LinearQuantizerConfig,
            ModuleLinearQuantizerConfig,
        )

        samples, sources = calibration_batch(request.spec, request.img_size, request.options.get("calibration"),
                                             requested_size(request.options))
        # milestones = steps to (enable observers, enable fake quantization, disable observers, freeze BN):
        # observers from step 0 see float activations (plain post-training calibration), BN frozen from step 0
        config = LinearQuantizerConfig(global_config=ModuleLinearQuantizerConfig(
            quantization_scheme="symmetric", milestones=[0, 10**9, 10**9, 0]))
        quantizer = LinearQuantizer(request.model, config)
        example = torch.from_numpy(samples[:1])
        prepared = quantizer.prepare(example_inputs=(example,), inplace=False).eval()
        quantizer.step()
        with torch.no_grad():
            for batch in torch.split(torch.from_numpy(samples), 8):
                prepared(batch)
        finalized = quantizer.finalize(inplace=False).eval()
        result = Conversion(details={
            "quantizer": "coremltools.optimize.torch LinearQuantizer (post-training, observers only)",
            "scheme": "W8A8: int8 per-channel symmetric weights, int8 activations (quantize/dequantize ops)",
        }, calibration=Calibration(method="minmax observers", samples=len(samples), images=sources))
        return finalized, result

    @staticmethod
    def _compress(mlmodel: Any, precision: str, path: Path) -> tuple[Any, Conversion]:
        """Weight compression on the fp16 ML program; returns the model and manifest details."""
        import coremltools.optimize.coreml as cto

        mlmodel.save(str(path))  # measure the uncompressed size first
        float_size = size_of(path)
        import shutil

        shutil.rmtree(path)
        if precision.startswith("palettize-"):
            bits = int(precision.split("-")[1])
            config = cto.OpPalettizerConfig(mode="kmeans", nbits=bits)
            compressed = cto.palettize_weights(mlmodel, config=cto.OptimizationConfig(global_config=config))
            scheme = f"{bits}-bit k-means palettization (per tensor lookup table)"
        elif precision == "int4-block":
            config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                                 block_size=32)
            compressed = cto.linear_quantize_weights(mlmodel, config=cto.OptimizationConfig(global_config=config))
            scheme = "int4 weights, symmetric, per block of 32 (iOS18)"
        else:
            config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel")
            compressed = cto.linear_quantize_weights(mlmodel, config=cto.OptimizationConfig(global_config=config))
            scheme = "int8 weights, symmetric, per channel"
        return compressed, Conversion(details={"compression": scheme, "compute_precision": "fp16"},
                                      float_size_bytes=float_size)

    @staticmethod
    def _load_spec(path: Path) -> Any:
        import coremltools as ct

        return ct.utils.load_spec(str(path))

    def _op_histogram(self, path: Path) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self._operations(self._load_spec(path)):
            counts[op.type] = counts.get(op.type, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    @staticmethod
    def _operations(spec: Any) -> list[Any]:
        ops: list[Any] = []
        for function in spec.mlProgram.functions.values():
            for block in function.block_specializations.values():
                ops.extend(block.operations)
        return ops

    @staticmethod
    def _descriptions(request: ExportRequest, kind: str, classifier: bool) -> dict[str, str]:
        """What Xcode shows for each input and output."""
        height, width = request.img_size
        mean_std = f"mean {list(request.spec.mean)} and std {list(request.spec.std)}"
        if kind == "image":
            resize = resize_contract(request.spec, request.img_size)["resize"]
            texts = {"image": f"RGB image, {width}x{height} px ({resize}); "
                              f"the model applies {mean_std} itself"}
        else:
            texts = {"input": f"float32 NCHW [{request.batch}, 3, {height}, {width}], RGB/255 normalised with {mean_std}"}
        if classifier:
            texts.update({"classLabel": "most likely class",
                          "classLabel_probs": "probability of every class (softmax of the logits)"})
        else:
            texts["logits"] = f"{request.num_classes} class logits (apply softmax for probabilities)"
        return texts

    @classmethod
    def classifier_labels(cls, spec: Any) -> list[str] | None:
        """The class names stored in the ML program's ``classify`` op, or None for a non-classifier."""
        for op in cls._operations(spec):
            if op.type == "classify":
                values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
                return [value.immediateValue.tensor.strings.values[0] for value in values]
        return None

    def inspect(self, path: Path, request: ExportRequest) -> list[str]:
        """Check what can be checked without macOS: I/O, op set, precision, metadata, class names."""
        spec = self._load_spec(path)
        problems = []
        if self.input_kind(request) == "image" and request.num_classes > 0:
            expected = request.class_names
            if self.classifier_labels(spec) != expected:
                problems.append("the classifier's class names differ from the labels asked for")
        if not spec.HasField("mlProgram"):
            problems.append("not an ML program")
        (source,) = spec.description.input
        height, width = request.img_size
        if self.input_kind(request) == "image":
            image = source.type.imageType
            if source.name != "image" or (image.height, image.width) != (height, width):
                problems.append(f"image input {source.name} {image.height}x{image.width} != image {height}x{width}")
        elif list(source.type.multiArrayType.shape) != [request.batch, 3, height, width]:
            problems.append(f"tensor input shape {list(source.type.multiArrayType.shape)} is wrong")
        outputs = [o.name for o in spec.description.output]
        if not outputs:
            problems.append("no outputs")
        target_name = deployment_target(request)
        if unavailable := ops_unavailable_on({op.type for op in self._operations(spec)}, target_name):
            problems.append(f"MIL ops {unavailable} are not Core ML ops on {target_name}: the model would not load there")
        cast_ops = sum(op.type == "cast" for op in self._operations(spec))
        if request.precision != "fp32" and cast_ops == 0:
            problems.append("fp16 compute requested but the program has no float16 casts")
        if request.precision in COMPRESSION_MODES and not any(
            op.type.startswith("constexpr_") for op in self._operations(spec)
        ):
            problems.append(f"{request.precision} requested but no compressed weights found")
        if request.precision in ACTIVATION_MODES and not any(op.type == "quantize" for op in self._operations(spec)):
            problems.append(f"{request.precision} requested but no activation quantize ops found")
        if request.precision == "fp32" and cast_ops > 0:
            problems.append("fp32 requested but the program casts to float16")
        metadata = dict(spec.description.metadata.userDefined)
        if metadata.get("model") != request.model_name:
            problems.append("model metadata missing")
        meta = spec.description.metadata
        if not (meta.author and meta.license and meta.versionString and meta.shortDescription):
            problems.append("author, license, version or description missing (Xcode shows them)")
        if undescribed := [f.name for f in (*spec.description.input, *spec.description.output) if not f.shortDescription]:
            problems.append(f"inputs/outputs without a description: {undescribed}")
        return problems

    def run(self, path: Path, request: ExportRequest, inputs: np.ndarray, batch: int) -> np.ndarray:
        if platform.system() != "Darwin":
            raise RuntimeUnavailable("Core ML prediction needs macOS")
        if self.input_kind(request) == "image":  # pragma: no cover - macOS only
            raise RuntimeUnavailable(
                "numerics of the image/classifier variant are not compared; "
                "export with --coreml-input tensor to compare logits on macOS"
            )
        import coremltools as ct  # pragma: no cover - macOS only

        mlmodel = ct.models.MLModel(str(path))
        outputs = [mlmodel.predict({"input": group})["logits"] for group in batches(inputs, batch)]
        return unbatch(outputs, len(inputs))

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        height, width = request.img_size
        if self.input_kind(request) == "image":
            source = {"name": "image", "type": "ImageType RGB", "shape": [request.batch, 3, height, width],
                      "value_range": "0-255 pixels, scaled by 1/255; mean/std applied inside the model"}
            target: dict[str, Any] = (
                {"names": ["classLabel", "classLabel_probs"], "meaning": "class label and softmax probabilities"}
                if request.num_classes > 0 else {"name": "logits", "meaning": "features"})
        else:
            source = {"name": "input", "type": "TensorType float32", "shape": [request.batch, 3, height, width],
                      "layout": "NCHW", "value_range": "normalised (x/255 - mean) / std"}
            target = {"name": "logits", "shape": [request.batch, request.num_classes], "meaning": "logits"}
        return {"input": source, "output": target}

