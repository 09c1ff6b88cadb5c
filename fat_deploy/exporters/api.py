"""``fat_deploy.export``: resolve the model, convert, verify in the runtime, then (and only then) place the
artifact and its manifest. This module knows no runtime by name: formats come from ``fat_deploy.runtimes``."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fat_deploy.common.aarch64 import unavailable_reason as aarch64_unavailable
from fat_deploy.common.calibration import MIN_CALIBRATION_IMAGES, folder_images, verification_inputs
from fat_deploy.common.evaluation import DEFAULT_MAX_ACCURACY_DROP, Evaluation, load_eval_set
from fat_deploy.common.files import size_of
from fat_deploy.common.labels import check_labels, default_labels, read_labels
from fat_deploy.common.verify import TOLERANCES, Tolerance
from fat_deploy.contract.formats import CALIBRATED, ExportFormat, ExportRequest, UnsupportedOptionError
from fat_deploy.environment import check_input_budget, native_stdout_to_stderr
from fat_deploy.errors import ArgumentError, FatDeployError, InputSizeError
from fat_deploy.exporters.manifest import build_manifest, manifest_path_for
from fat_deploy.exporters.options import check_request_options
from fat_deploy.exporters.placement import check_targets, place_pair, prepare_output_dir, staging_folder
from fat_deploy.exporters.verification import (
    FAILED,
    NOT_VERIFIED,
    PASSED,
    Status,
    summarize,
    verify_artifact,
    verify_on_aarch64,
)
from fat_deploy.models.deploy import to_deploy
from fat_deploy.models.float16_norms import scale_norms_for_float16
from fat_deploy.models.registry import ModelSpec, create_model, get_spec
from fat_deploy.precision import Precision
from fat_deploy.registry import formats, get_format
from fat_deploy.validation import (
    require_bool,
    require_img_size,
    require_int,
    require_path,
    require_str,
    require_str_list,
)

__all__ = ["Artifact", "CALIBRATED", "FAILED", "NOT_VERIFIED", "PASSED", "Status", "check_arm64", "check_calibration_folder",
           "check_labels", "check_request_options", "export", "read_labels", "resolve_img_size"]

log = logging.getLogger("fat_deploy")
FLOAT_PRECISIONS = (Precision.FP32, Precision.FP16)


@dataclass
class Artifact:
    """The outcome of one export: where it is (if it passed), and how it compared with PyTorch."""

    model: str
    format: str
    precision: Precision
    status: Status
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
    return size[0], size[1]


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
    labels: str | Path | list[str] | None = None,
    calibration: str | Path | None = None,
    calibration_size: int | None = None,
    calibration_method: str | None = None,
    eval_dir: str | Path | None = None,
    eval_map: str | Path | None = None,
    max_accuracy_drop: float | None = None,
    deploy: bool = True,
    verify: bool = True,
    arm64: bool = False,
    force: bool = False,
    tolerance: Tolerance | None = None,
    on_stage: Callable[[str], None] | None = None,
    **format_options: Any,
) -> Artifact:
    """Export one model to one format/precision; see :class:`Artifact` for the outcome.

    ``format_options`` are the format's own options (fields of its ``Options`` dataclass, e.g. ``nhwc=True``
    for tflite); an option the format does not have is an error. User errors (bad name, option, checkpoint,
    folder) raise :class:`FatDeployError` before any work; a conversion or verification failure returns an
    Artifact with status ``failed`` and leaves no file behind. ``arm64``: also run the verified file with the aarch64
    build of its runtime under emulation (:mod:`fat_deploy.common.aarch64`); a departure fails it.
    """
    _check_export_arguments(locals())
    stage = on_stage or (lambda _message: None)
    fmt = get_format(format)
    options = {"calibration": str(calibration) if calibration is not None else None,
               "calibration_size": calibration_size, "calibration_method": calibration_method, **format_options}
    mode = check_request_options(fmt, precision, options)
    if options.get("dynamic_batch") and batch != 1:
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
    check_input_budget(batch, size)
    out_dir = prepare_output_dir(out)
    request = ExportRequest(
        model_name=name, spec=spec, reference=reference,
        model=reference, img_size=size, precision=mode, batch=batch, options=options,
    )
    if isinstance(labels, (str, Path)):
        request.labels = read_labels(labels, request.num_classes)
        labels_source = f"labels file {Path(labels).name}"  # the name only: manifests ship to others
    elif labels is not None:
        request.labels, labels_source = check_labels(list(labels), request.num_classes), "given"
    else:
        request.labels, labels_source = default_labels(request.num_classes)
    if calibration is not None and precision in CALIBRATED:
        check_calibration_folder(calibration)  # empty, unreadable or too small: before any work
    request.evaluation = evaluation_for(request, eval_dir, eval_map, max_accuracy_drop)
    if arm64:
        check_arm64(fmt, request, verify)
    target = out_dir / fmt.artifact_name(name, mode, request.options)
    targets = check_targets(target, manifest_path_for(target), force, fmt.is_artifact)
    if deploy:
        request.model = fmt.runtime_form(to_deploy(reference))
        if mode in FLOAT_PRECISIONS:  # exact: float16-safe norms for devices that run float files in float16
            sample = torch.from_numpy(verification_inputs(spec, size)[0])
            request.float16_norm_scales = scale_norms_for_float16(request.model, sample)
    artifact = Artifact(model=name, format=fmt.name, precision=mode, status=FAILED)
    started = time.perf_counter()
    try:
        with staging_folder(out_dir) as workdir:
            if _convert_and_verify(fmt, request, workdir / target.name, artifact, verify=verify, arm64=arm64,
                                   tolerance=tolerance,
                                   stage=stage, checkpoint=checkpoint, labels_source=labels_source, deploy=deploy,
                                   started=started):
                place_pair(workdir / target.name, workdir / targets.manifest.name, targets)
                artifact.path, artifact.manifest_path = target, targets.manifest
        return artifact
    finally:
        artifact.seconds = time.perf_counter() - started


def evaluation_for(request: ExportRequest, eval_dir: str | Path | None, eval_map: str | Path | None,
                   max_accuracy_drop: float | None) -> Evaluation | None:
    """The labeled set of --eval-dir, loaded (and refused if unusable) before any conversion."""
    if eval_dir is None:
        if eval_map is not None or max_accuracy_drop is not None:
            raise ArgumentError("--eval-map and --max-accuracy-drop need --eval-dir")
        return None
    if max_accuracy_drop is not None and max_accuracy_drop < 0:
        raise ArgumentError(f"--max-accuracy-drop must be >= 0 points, got {max_accuracy_drop}")
    eval_set = load_eval_set(eval_dir, request.spec, request.img_size, request.labels or [], request.num_classes,
                             eval_map)
    drop = DEFAULT_MAX_ACCURACY_DROP if max_accuracy_drop is None else float(max_accuracy_drop)
    return Evaluation(eval_set, drop)


def check_arm64(fmt: ExportFormat, request: ExportRequest, verify: bool) -> None:
    """Refuse ``--arm64`` where it cannot run, before any work."""
    able = ", ".join(name for name, other in formats().items() if other.runs_on_aarch64)
    if not fmt.runs_on_aarch64:
        raise UnsupportedOptionError(f"--arm64: no aarch64 runtime for {fmt.name} files here (there is for: {able})")
    if not verify:
        raise UnsupportedOptionError("--arm64 runs the verification on an emulated ARM CPU: it cannot go with --no-verify")
    if fmt.io_spec(request)["output"].get("meaning") != "logits":
        raise UnsupportedOptionError("--arm64 runs plain files (logits out); app forms such as --mediapipe and "
                                     "--image-bytes are verified on x86 only")
    if (reason := aarch64_unavailable()) is not None:
        raise FatDeployError(f"--arm64: {reason}")


def check_calibration_folder(folder: str | Path) -> None:
    """Refuse a calibration folder that is missing, empty or has unreadable images; warn when it is small."""

    distinct = sum(1 for _ in folder_images(folder))  # every image decoded once: unreadable ones fail here
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
    require_path("eval_dir", arguments["eval_dir"], optional=True)
    require_path("eval_map", arguments["eval_map"], optional=True)
    drop = arguments["max_accuracy_drop"]
    if drop is not None and (isinstance(drop, bool) or not isinstance(drop, (int, float))):
        raise ArgumentError(f"max_accuracy_drop must be a number of points, got {type(drop).__name__}")
    require_str("calibration_method", arguments["calibration_method"], optional=True)
    for flag in ("deploy", "verify", "arm64", "force"):
        require_bool(flag, arguments[flag])
    model = arguments["model_or_name"]
    if not isinstance(model, (str, nn.Module)):
        raise ArgumentError(f"model_or_name must be a registered model name or an nn.Module, got {type(model).__name__}")
    labels = arguments["labels"]
    if labels is not None and not isinstance(labels, (str, Path)):
        require_str_list("labels", labels)


def _coverage(fmt: ExportFormat, staged: Path, notes: list[str]) -> dict[str, Any]:
    """The artifact's coverage report for the manifest; its accelerator line goes to the summary notes. A file the
    reader cannot open is left to verification to judge; the manifest says why it has no report."""
    try:
        with native_stdout_to_stderr():
            report = fmt.coverage(staged)
    except Exception as error:  # noqa: BLE001 - reported in the manifest
        return {"unavailable": _one_line(error)}
    if report is None:
        return {"unavailable": f"no coverage reader for {fmt.name}"}
    if line := report.summary_line():
        notes.append(line)
    return report.as_dict()


def _convert_and_verify(
    fmt: ExportFormat, request: ExportRequest, staged: Path, artifact: Artifact, *, verify: bool, arm64: bool,
    tolerance: Tolerance | None, stage: Callable[[str], None], checkpoint: str | Path | None,
    labels_source: str, deploy: bool, started: float,
) -> bool:
    """Convert into ``staged``, verify, and write the manifest beside it; False (artifact.error set) on failure."""
    stage("converting")
    try:
        with native_stdout_to_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # converters' deprecation chatter; failures still raise
            conversion = fmt.convert(request, staged)
    except FatDeployError:
        raise
    except Exception as error:  # noqa: BLE001 - any converter failure is reported, not raised
        artifact.error = f"conversion failed: {_one_line(error)}"
        return False
    export_seconds = time.perf_counter() - started
    if conversion.explanation is not None:  # shown even if verification fails
        artifact.explain = conversion.explanation.worst_layers
    if conversion.float_size_bytes is not None:
        artifact.cost["float_size_bytes"] = conversion.float_size_bytes
    if (latency := conversion.latency) is not None:
        artifact.cost["latency"] = latency.as_dict()
        if latency.speedup < 1.0:  # never shown as a plain success
            artifact.notes.append(f"slower than its float version: {latency.speedup:.2f}x the speed ({latency.float_ms} "
                                  f"-> {latency.quantized_ms} ms, {latency.runtime}, 1 thread)")
    artifact.notes.extend(conversion.notes)
    details = conversion.manifest_details()
    details["coverage"] = _coverage(fmt, staged, artifact.notes)
    calibrated_on = conversion.calibration.images if conversion.calibration else []
    check = tolerance or TOLERANCES[request.precision]
    if verify:
        stage("verifying")
        try:
            status, verification = verify_artifact(fmt, request, staged, check, artifact.notes, calibrated_on,
                                                   conversion.simulation)
        except Exception as error:  # noqa: BLE001
            artifact.error = f"verification failed: {_one_line(error)}"
            return False
    else:
        status, verification = NOT_VERIFIED, {"skipped": "--no-verify", "tolerance": check.as_dict()}
        artifact.notes.append("verification skipped (--no-verify)")
    if arm64 and status != FAILED:
        stage("running on an emulated ARM64 CPU")
        passed, verification["aarch64"] = verify_on_aarch64(fmt, request, staged, check, calibrated_on)
        record = verification["aarch64"]
        if passed:
            artifact.notes.append(f"aarch64 ({record['runtime']}, {record['cpu_emulated']} emulated): max abs diff "
                                  f"{record['comparison']['max_abs_diff']:.1e} vs PyTorch, "
                                  f"{record['x86_vs_aarch64_max_abs_diff']:.1e} vs x86")
        else:
            status = FAILED
            reason = record.get("failure") or "; ".join(record["comparison"]["failures"])
            artifact.notes.append(f"aarch64 ({record['cpu_emulated']} emulated): {reason}")
    artifact.comparison = summarize(verification)
    artifact.status = status
    if status == FAILED:
        artifact.error = "verification outside tolerance: " + "; ".join(artifact.notes)
        return False
    artifact.size_bytes = size_of(staged)
    manifest = build_manifest(request, fmt, staged, details, verification, status, export_seconds,
                         checkpoint, labels_source, deploy)
    with manifest_path_for(staged).open("w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, default=str)
        handle.write("\n")
    return True
