"""``fat_deploy.export``: convert, verify in the runtime, then (and only then) put the artifact in place."""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.environment import host_info, native_stdout_to_stderr, tool_versions
from fat_deploy.errors import ArgumentError, FatDeployError, InputSizeError
from fat_deploy.exporters.calibration import (
    MIN_CALIBRATION_IMAGES,
    held_out_inputs,
    resize_contract,
    verification_inputs,
)
from fat_deploy.exporters.manifest import MANIFEST_SCHEMA_VERSION, manifest_path_for, sha256_of, size_of
from fat_deploy.exporters.placement import check_targets, place_pair, prepare_output_dir, staging_folder
from fat_deploy.exporters.registry import (
    PRECISIONS,
    QUANTIZED,
    ExportFormat,
    ExportRequest,
    RuntimeUnavailable,
    UnsupportedOptionError,
    get_format,
)
from fat_deploy.exporters.verify import TOLERANCES, Comparison, Tolerance, compare
from fat_deploy.models.registry import ModelSpec, create_model, get_spec
from fat_deploy.validation import (
    require_bool,
    require_img_size,
    require_int,
    require_path,
    require_str,
    require_str_list,
)

log = logging.getLogger("fat_deploy")

PASSED, NOT_VERIFIED, FAILED = "passed", "exported-not-verified", "failed"
OPTION_FLAGS = {
    "dynamic_batch": "--dynamic-batch",
    "nhwc": "--nhwc",
    "minimum_deployment_target": "--minimum-deployment-target",
    "coreml_input": "--coreml-input",
    "calibration": "--calibration",
    "calibration_size": "--calibration-size",
    "calibration_method": "--calibration-method",
    "keep_float": "--keep-float",
    "explain": "--explain",
    "int8_io": "--int8-io",
}
CALIBRATION_OPTIONS = ("calibration", "calibration_size", "calibration_method")
CALIBRATED = ("int8-static", "w8a8")
DYNAMIC_BATCH_CHECKS = (1, 4)


@dataclass
class Artifact:
    """The outcome of one export: where it is (if it passed), and how it compared with PyTorch."""

    model: str
    format: str
    precision: str
    status: str
    path: Path | None = None
    manifest_path: Path | None = None
    size_bytes: int | None = None
    seconds: float = 0.0
    comparison: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    explain: list[dict[str, Any]] | None = None  # --explain: worst layers first
    cost: dict[str, Any] = field(default_factory=dict)  # quantized: float size and latency vs float

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "format": self.format, "precision": self.precision,
            "status": self.status, "path": str(self.path) if self.path else None,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "size_bytes": self.size_bytes, "seconds": round(self.seconds, 2),
            "comparison": self.comparison, "notes": self.notes, "error": self.error, "explain": self.explain,
            "cost": self.cost,
        }


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}" if not isinstance(error, FatDeployError) else text[:300]


def resolve_img_size(img_size: int | Sequence[int] | None, spec: ModelSpec) -> tuple[int, int]:
    """(H, W) from N, (N,) or (H, W); too small for the model is an error."""
    if img_size is None:
        return (spec.input_size, spec.input_size)
    size = (img_size,) if isinstance(img_size, int) else tuple(int(v) for v in img_size)
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2:
        raise InputSizeError(f"--img-size takes one or two numbers (H W), got {list(size)}")
    if spec.fixed_input_size and size != (spec.input_size, spec.input_size):
        raise InputSizeError(
            f"{spec.name} is built for {spec.input_size}x{spec.input_size} inputs only, got {size[0]}x{size[1]}"
        )
    if min(size) < spec.min_input_size:
        raise InputSizeError(
            f"image size {size[0]}x{size[1]} is too small for {spec.name}: it needs at least "
            f"{spec.min_input_size} px per side (its features are downsampled 32x)"
        )
    return size  # type: ignore[return-value]


def check_request_options(fmt: ExportFormat, precision: str, options: dict[str, Any]) -> None:
    """Reject unknown precisions and options a format does not support, before any work."""
    if precision not in PRECISIONS:
        raise UnsupportedOptionError(f"unknown precision {precision!r}: known are {', '.join(PRECISIONS)}")
    if precision not in fmt.precisions:
        raise UnsupportedOptionError(
            f"{fmt.name} does not support precision {precision}: it supports {', '.join(fmt.precisions)}"
        )
    require_int("--calibration-size", options.get("calibration_size"), minimum=1, optional=True)
    for option, value in options.items():
        if value and option in CALIBRATION_OPTIONS and precision not in CALIBRATED:
            raise UnsupportedOptionError(
                f"{OPTION_FLAGS[option]} applies to calibrated modes ({', '.join(CALIBRATED)}) only, not {precision}")
        if value and option in ("keep_float", "explain") and precision not in QUANTIZED:
            raise UnsupportedOptionError(f"{OPTION_FLAGS[option]} applies to quantized modes only, not {precision}")
        if value and option == "int8_io" and precision != "int8-static":
            raise UnsupportedOptionError(f"--int8-io applies to int8-static only, not {precision}")
        if value and option in CALIBRATION_OPTIONS:
            continue
        if value and option not in fmt.supported_options:
            raise UnsupportedOptionError(f"{OPTION_FLAGS.get(option, option)} is not supported for {fmt.name}")
    if reason := fmt.unavailable_reason():
        raise UnsupportedOptionError(reason)


def read_labels(path: str | Path, num_classes: int) -> list[str]:
    path = Path(path)
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise FatDeployError(f"cannot read labels file {path}: {error}") from None
    return check_labels(labels, num_classes, f"labels file {path}")


def check_labels(labels: list[str], num_classes: int, source: str = "labels") -> list[str]:
    """One unique, non-empty name per class."""
    if not all(isinstance(label, str) and label.strip() for label in labels):
        raise FatDeployError(f"{source}: every label must be a non-empty string")
    if len(labels) != num_classes:
        raise FatDeployError(f"{source} has {len(labels)} labels, the model has {num_classes} classes")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        shown = ", ".join(repr(label) for label in repeated[:3]) + (" ..." if len(repeated) > 3 else "")
        raise FatDeployError(f"{source} repeats labels ({shown}): each class needs its own name")
    return labels


def _reference_logits(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(chunk)).numpy() for chunk in np.array_split(inputs, max(1, len(inputs) // 4))])


def _fp16_proxy(request: ExportRequest, inputs: np.ndarray, reference: np.ndarray) -> Comparison:
    """The converted model in float16 on PyTorch/CPU: catches fp16 overflow where the runtime can't run."""
    half = copy.deepcopy(request.model).half().eval()
    with torch.no_grad():
        outputs = half(torch.from_numpy(inputs).half()).float().numpy()
    return compare(reference, outputs, TOLERANCES["fp16"])


def _verify(
    fmt: ExportFormat, request: ExportRequest, path: Path, tolerance: Tolerance, notes: list[str]
) -> tuple[str, dict[str, Any]]:
    if request.precision in QUANTIZED:  # held-out images: never the calibration ones
        calibrated_on = list(request.options.get("calibrated_on") or [])
        inputs, names = held_out_inputs(request.spec, request.img_size, calibrated_on)
    else:
        inputs, names = verification_inputs(request.spec, request.img_size)
    reference = _reference_logits(request.reference, inputs)
    result: dict[str, Any] = {"inputs": names, "tolerance": tolerance.as_dict(), "runtime": fmt.runtime,
                              "reference": "fp32 PyTorch model (faithful form)"}
    problems = fmt.inspect(path, request)
    result["structure_problems"] = problems
    batches = DYNAMIC_BATCH_CHECKS if request.dynamic_batch else (request.batch,)
    comparisons: dict[str, Comparison] = {}
    try:
        for batch in batches:
            comparisons[f"batch{batch}"] = compare(reference, fmt.run(path, request, inputs, batch), tolerance)
    except RuntimeUnavailable as reason:
        result["runtime_available"] = False
        notes.append(f"numerics not verified on this host: {reason}")
        if request.simulation is not None:  # the quantized numerics, simulated in PyTorch
            proxy = compare(reference, _reference_logits(request.simulation, inputs), tolerance)
            result["simulation_proxy"] = {
                "runtime": f"torch {torch.__version__} on CPU (fake quantization)",
                "covers": "int8 weights and activations as quantized for the artifact; fp16 compute not simulated",
                **proxy.as_dict()}
            if not proxy.passed:
                problems = [*problems, f"quantization simulation failed: {'; '.join(proxy.failures)}"]
        elif request.precision != "fp32":  # fp16 compute: catch overflow on a runtime that runs here
            proxy = _fp16_proxy(request, inputs, reference)
            covers = "float16 compute" + ("" if request.precision == "fp16" else "; weight compression not simulated")
            result["fp16_proxy"] = {"runtime": f"torch {torch.__version__} float16 on CPU", "covers": covers,
                                    **proxy.as_dict()}
            if not proxy.passed:
                problems = [*problems, f"float16 proxy check failed: {'; '.join(proxy.failures)}"]
        result["runtime_unavailable_reason"] = str(reason)
        notes.extend(problems)
        return (FAILED if problems else NOT_VERIFIED), result
    result["runtime_available"] = True
    result["comparisons"] = {key: value.as_dict() for key, value in comparisons.items()}
    failures = [f"{key}: {f}" for key, value in comparisons.items() for f in value.failures]
    result["passed"] = not failures and not problems
    if failures or problems:
        notes.extend([*problems, *failures])
    return (PASSED if result["passed"] else FAILED), result


def _summary(result: dict[str, Any]) -> dict[str, Any] | None:
    comparisons = result.get("comparisons") or {}
    if not comparisons:
        for key, source in (("simulation_proxy", "simulated"), ("fp16_proxy", "fp16 proxy")):
            if proxy := result.get(key):
                keys = ("max_abs_diff", "cosine_min", "top1_agreement", "top5_overlap", "sqnr_db")
                return {"source": source, **{k: proxy[k] for k in keys}}
        return None
    worst = max(comparisons.values(), key=lambda c: c["max_abs_diff"])
    keys = ("max_abs_diff", "cosine_min", "top1_agreement", "top5_overlap", "sqnr_db")
    return {"source": str(result["runtime"]), **{k: worst[k] for k in keys}}


def export(
    model_or_name: str | nn.Module,
    format: str,  # noqa: A002 - the user-facing word
    precision: str = "fp32",
    out: str | Path = "exports",
    *,
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    img_size: int | tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    nhwc: bool = False,
    labels: str | Path | list[str] | None = None,
    minimum_deployment_target: str | None = None,
    coreml_input: str | None = None,
    calibration: str | Path | None = None,
    calibration_size: int | None = None,
    calibration_method: str | None = None,
    keep_float: list[str] | None = None,
    explain: bool = False,
    int8_io: bool = False,
    deploy: bool = True,
    verify: bool = True,
    force: bool = False,
    tolerance: Tolerance | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Artifact:
    """Export one model to one format/precision; see :class:`Artifact` for the outcome.

    User errors (bad name, option, checkpoint, folder) raise :class:`FatDeployError` before any
    work; a conversion or verification failure returns an Artifact with status ``failed`` and
    leaves no file behind.
    """
    _check_export_arguments(locals())
    stage = on_stage or (lambda _message: None)
    fmt = get_format(format)
    options = {"dynamic_batch": dynamic_batch, "nhwc": nhwc,
               "minimum_deployment_target": minimum_deployment_target, "coreml_input": coreml_input,
               "calibration": calibration, "calibration_size": calibration_size,
               "calibration_method": calibration_method, "keep_float": keep_float, "explain": explain, "int8_io": int8_io}
    check_request_options(fmt, precision, options)
    if dynamic_batch and batch != 1:
        raise UnsupportedOptionError("--dynamic-batch exports with an example batch of 1; leave --batch out")
    if isinstance(model_or_name, str):
        spec = get_spec(model_or_name)
        reference = create_model(spec.name, checkpoint=checkpoint)
        name = spec.name
    else:
        name = (model_name or type(model_or_name).__name__).lower()
        spec = get_spec(name)
        reference = model_or_name.eval()
    size = resolve_img_size(img_size, spec)
    out_dir = prepare_output_dir(out)
    request = ExportRequest(
        model_name=name, spec=spec, reference=reference,
        model=reference, img_size=size, precision=precision, batch=batch,
        dynamic_batch=dynamic_batch, nhwc=nhwc,
        options={k: v for k, v in options.items() if k not in ("dynamic_batch", "nhwc")},
    )
    labels_source = None
    if isinstance(labels, (str, Path)):
        request.labels, labels_source = read_labels(labels, request.num_classes), str(labels)
    elif labels is not None:
        request.labels, labels_source = check_labels(list(labels), request.num_classes), "given"
    if calibration is not None and precision in CALIBRATED:
        check_calibration_folder(calibration)  # empty, unreadable or too small: before any work
    target = out_dir / fmt.artifact_name(name, precision, request.options)
    targets = check_targets(target, manifest_path_for(target), force)
    if deploy:
        from fat_deploy.models.deploy import to_deploy

        request.model = to_deploy(reference)
    artifact = Artifact(model=name, format=fmt.name, precision=precision, status=FAILED)
    started = time.perf_counter()
    try:
        with staging_folder(out_dir) as workdir:
            if _convert_and_verify(fmt, request, workdir / target.name, artifact, verify=verify, tolerance=tolerance,
                                   stage=stage, checkpoint=checkpoint, labels_source=labels_source, deploy=deploy,
                                   started=started):
                place_pair(workdir / target.name, workdir / targets.manifest.name, targets)
                artifact.path, artifact.manifest_path = target, targets.manifest
        return artifact
    finally:
        artifact.seconds = time.perf_counter() - started


def check_calibration_folder(folder: str | Path) -> None:
    """Refuse a calibration folder that is missing, empty or has unreadable images; warn when it is small."""
    from fat_deploy.exporters.calibration import folder_images

    distinct = len(folder_images(folder))
    if distinct < MIN_CALIBRATION_IMAGES:
        log.warning("--calibration %s has %d image(s): calibration statistics from fewer than %d distinct images "
                    "rarely represent the data (random crops of them are used)", folder, distinct,
                    MIN_CALIBRATION_IMAGES)


def _check_export_arguments(arguments: dict[str, Any]) -> None:
    """Types and ranges of export()'s arguments, as one-line errors (the CLI gets the same)."""
    require_str("format", arguments["format"])
    require_str("precision", arguments["precision"])
    require_path("out", arguments["out"])
    require_path("checkpoint", arguments["checkpoint"], optional=True)
    require_str("model_name", arguments["model_name"], optional=True)
    require_img_size(arguments["img_size"])
    require_int("batch", arguments["batch"], minimum=1)
    require_path("calibration", arguments["calibration"], optional=True)
    require_str("calibration_method", arguments["calibration_method"], optional=True)
    require_str("minimum_deployment_target", arguments["minimum_deployment_target"], optional=True)
    require_str("coreml_input", arguments["coreml_input"], optional=True)
    require_str_list("keep_float", arguments["keep_float"])
    for flag in ("dynamic_batch", "nhwc", "explain", "int8_io", "deploy", "verify", "force"):
        require_bool(flag, arguments[flag])
    model = arguments["model_or_name"]
    if not isinstance(model, (str, nn.Module)):
        raise ArgumentError(f"model_or_name must be a registered model name or an nn.Module, got {type(model).__name__}")
    labels = arguments["labels"]
    if labels is not None and not isinstance(labels, (str, Path)):
        require_str_list("labels", labels)


def _convert_and_verify(
    fmt: ExportFormat, request: ExportRequest, staged: Path, artifact: Artifact, *, verify: bool,
    tolerance: Tolerance | None, stage: Callable[[str], None], checkpoint: str | Path | None,
    labels_source: str | None, deploy: bool, started: float,
) -> bool:
    """Convert into ``staged``, verify, and write the manifest beside it; False (artifact.error set) on failure."""
    stage("converting")
    try:
        with native_stdout_to_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # converters' deprecation chatter; failures still raise
            details = fmt.convert(request, staged)
    except FatDeployError:
        raise
    except Exception as error:  # noqa: BLE001 - any converter failure is reported, not raised
        artifact.error = f"conversion failed: {_one_line(error)}"
        return False
    export_seconds = time.perf_counter() - started
    artifact.explain = (details.get("explain") or {}).get("worst_layers")  # shown even if verification fails
    artifact.cost = {k: details[k] for k in ("float_size_bytes", "latency") if k in details}
    artifact.notes.extend(details.get("summary_notes", []))
    if "calibration" in details:
        request.options["calibrated_on"] = details["calibration"]["images"]
    check = tolerance or TOLERANCES[request.precision]
    if verify:
        stage("verifying")
        try:
            status, verification = _verify(fmt, request, staged, check, artifact.notes)
        except Exception as error:  # noqa: BLE001
            artifact.error = f"verification failed: {_one_line(error)}"
            return False
    else:
        status, verification = NOT_VERIFIED, {"skipped": "--no-verify", "tolerance": check.as_dict()}
        artifact.notes.append("verification skipped (--no-verify)")
    artifact.comparison = _summary(verification)
    artifact.status = status
    if status == FAILED:
        artifact.error = "verification outside tolerance: " + "; ".join(artifact.notes)
        return False
    artifact.size_bytes = size_of(staged)
    manifest = _manifest(request, fmt, staged, details, verification, status, export_seconds,
                         checkpoint, labels_source, deploy)
    with manifest_path_for(staged).open("w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, default=str)
        handle.write("\n")
    return True


def _manifest(
    request: ExportRequest, fmt: ExportFormat, path: Path, details: dict[str, Any],
    verification: dict[str, Any], status: str, seconds: float, checkpoint: str | Path | None,
    labels_source: str | None, deploy: bool,
) -> dict[str, Any]:
    spec = request.spec
    io = fmt.io_spec(request)
    if labels_source is None and request.num_classes == 1000:
        labels_source = "ImageNet-1k class indices (names in Core ML classifier: timm ImageNetInfo)"
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "model": request.model_name,
        "variant_source": spec.source,
        "official_configuration": spec.official,
        "checkpoint": {"path": str(checkpoint), "sha256": sha256_of(Path(checkpoint)),
                       **getattr(request.reference, "checkpoint_notes", {})} if checkpoint else "random init",
        "deploy_form": deploy,
        "format": fmt.name,
        "precision": request.precision,
        "status": status,
        "input": io["input"],
        "output": io["output"],
        "preprocessing": {
            **resize_contract(spec, request.img_size),
            "center_crop": list(request.img_size), "interpolation": spec.interpolation,
            "value_range": "RGB / 255 -> [0, 1]", "mean": list(spec.mean), "std": list(spec.std),
        },
        "labels": {"source": labels_source or "class indices", "count": request.num_classes,
                   **({"names": request.labels} if request.labels else {})},
        "file": {"name": path.name, "size_bytes": size_of(path), "sha256": sha256_of(path)},
        "format_details": details,
        "tool_versions": {**tool_versions(), "torch": torch.__version__},
        "export_seconds": round(seconds, 2),
        "verification": verification,
        "host": host_info(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
