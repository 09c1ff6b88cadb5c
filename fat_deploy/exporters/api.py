"""``fat_deploy.export``: resolve the model, convert, verify in the runtime, then (and only then) place the
artifact and its manifest. This module knows no runtime by name: formats come from ``fat_deploy.runtimes``."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fat_deploy.common.aarch64 import unavailable_reason as aarch64_unavailable
from fat_deploy.common.calibration import MIN_CALIBRATION_IMAGES, folder_images, verification_inputs
from fat_deploy.common.evaluation import DEFAULT_MAX_ACCURACY_DROP, Evaluation, load_eval_set
from fat_deploy.common.explain import SHOWN_BY_DEFAULT
from fat_deploy.common.files import size_of
from fat_deploy.common.labels import check_labels, default_labels, read_labels
from fat_deploy.common.verify import TOLERANCES, Tolerance
from fat_deploy.contract.formats import CALIBRATED, QUANTIZED, ExportFormat, ExportRequest, UnsupportedOptionError
from fat_deploy.contract.reuse import reusing_conversions
from fat_deploy.environment import check_input_budget, int8_isa, native_stdout_to_stderr
from fat_deploy.errors import ArgumentError, FatDeployError, InputSizeError
from fat_deploy.exporters.accuracy_search import METHOD, SearchStep, search, summary_line
from fat_deploy.exporters.manifest import build_manifest, manifest_path_for
from fat_deploy.exporters.options import check_request_options
from fat_deploy.exporters.placement import check_targets, place_pair, prepare_output_dir, staging_folder
from fat_deploy.exporters.verification import (
    FAILED,
    NOT_VERIFIED,
    PASSED,
    Status,
    accuracy_problem,
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
# Modes whose arithmetic is floating point (weight-only compression included: Core ML computes those in float16, and so
# do GPU delegates): they get the exact float16-safe norm rewrite. The trained test bed's Core ML int8-weights file
# overflowed 65504 in a norm of layers.2.blocks.5 without it.
FLOAT_COMPUTE = (Precision.FP32, Precision.FP16, Precision.INT8_WEIGHTS, Precision.PALETTIZE_4, Precision.PALETTIZE_6,
                 Precision.PALETTIZE_8, Precision.INT4_BLOCK)
# A quantized file under this many times its float file's speed is flagged: it costs accuracy for little.
WORTHWHILE_SPEEDUP = 1.2


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
    accuracy_search: bool = True,
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
    ``accuracy_search``: a quantized file that loses more top-1 on ``eval_dir`` than allowed is re-quantized with its
    worst layers kept float until it holds (:mod:`fat_deploy.exporters.accuracy_search`), where the format can.
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
    if not accuracy_search and eval_dir is None:
        raise ArgumentError("--no-accuracy-search needs --eval-dir (the search runs on its labeled images)")
    if arm64:
        check_arm64(fmt, request, verify)
    searching = accuracy_search and can_search(fmt, request)
    if searching:
        request.options["explain"] = True  # the first file's layer ranking guides the search
    target = out_dir / fmt.artifact_name(name, mode, request.options)
    targets = check_targets(target, manifest_path_for(target), force, fmt.is_artifact)
    if deploy:
        request.model = fmt.runtime_form(to_deploy(reference))
        if mode in FLOAT_COMPUTE:  # exact: float16-safe norms for devices that run float files in float16
            sample = torch.from_numpy(verification_inputs(spec, size)[0])
            request.float16_norm_scales = scale_norms_for_float16(request.model, sample)
    artifact = Artifact(model=name, format=fmt.name, precision=mode, status=FAILED)
    started = time.perf_counter()

    def attempt(step_request: ExportRequest, staged: Path, outcome: Artifact) -> _Attempt:
        return _convert_and_verify(fmt, step_request, staged, outcome, verify=verify, arm64=arm64, tolerance=tolerance,
                                   stage=stage, checkpoint=checkpoint, labels_source=labels_source, deploy=deploy,
                                   started=started)
    try:
        with reusing_conversions(), staging_folder(out_dir) as workdir:
            result = attempt(request, workdir / target.name, artifact)
            if searching and result.accuracy_failed:
                stage("searching for the layers to keep float")
                artifact, result = _search_float_layers(request, workdir, target.name, artifact, result, attempt)
            if result.manifest is not None:
                with manifest_path_for(result.staged).open("w", encoding="utf-8") as handle:
                    json.dump(result.manifest, handle, indent=2, default=str)
                    handle.write("\n")
                place_pair(result.staged, manifest_path_for(result.staged), targets)
                artifact.path, artifact.manifest_path = target, targets.manifest
        return artifact
    finally:
        artifact.seconds = time.perf_counter() - started


def can_search(fmt: ExportFormat, request: ExportRequest) -> bool:
    """Whether a failing top-1 drop can be searched away: a quantized mode judged on --eval-dir, in a format whose
    quantizer leaves named layers float and ranks them (``keep_float`` and ``explain`` options)."""
    return (request.evaluation is not None and request.precision in QUANTIZED
            and {"keep_float", "explain"} <= fmt.supported_options)


@dataclass
class _Attempt:
    """One conversion and verification into ``staged``: its manifest (None: it failed) and what a search needs."""

    staged: Path
    manifest: dict[str, Any] | None = None
    ranking: list[str] = field(default_factory=list)  # --explain's layers, worst first
    accuracy: dict[str, Any] | None = None  # the verification's accuracy record
    accuracy_failed: bool = False  # failed, its top-1 drop over the limit (more float layers may help)
    speedup: float | None = None
    size_bytes: int | None = None

    def step(self, kept_float: int, artifact: Artifact, seconds: float) -> SearchStep:
        drop = self.accuracy["top1_drop_points"] if self.accuracy else None
        failure = None if self.manifest is not None or self.accuracy_failed else (artifact.error or "failed")
        return SearchStep(kept_float, self.manifest is not None and artifact.status == PASSED, drop, self.speedup,
                          self.size_bytes, round(seconds, 1), failure)


def _search_float_layers(request: ExportRequest, workdir: Path, name: str, first_artifact: Artifact, first: _Attempt,
                         attempt: Callable[[ExportRequest, Path, Artifact], _Attempt]) -> tuple[Artifact, _Attempt]:
    """Re-export with the worst-ranked layers float until the top-1 drop holds; the passing step (its manifest
    recording the search), or the first attempt with the search's outcome in its error."""
    patterns = list(request.options.get("keep_float") or [])
    tried: dict[int, tuple[Artifact, _Attempt, list[str]]] = {}

    def step(layers: list[str]) -> SearchStep:
        started = time.perf_counter()
        options = {**request.options, "keep_float": [*patterns, *layers], "explain": False}
        staged = workdir / f"keep-float-{len(layers)}" / name
        staged.parent.mkdir()
        outcome = Artifact(model=first_artifact.model, format=first_artifact.format,
                           precision=first_artifact.precision, status=FAILED)
        result = attempt(replace(request, options=options), staged, outcome)
        tried[len(layers)] = (outcome, result, layers)
        return result.step(len(layers), outcome, time.perf_counter() - started)

    first_step = first.step(0, first_artifact, 0.0)
    steps = search(first.ranking, step, first_step.top1_drop_points)
    assert request.evaluation is not None  # can_search() asked for it
    record = {"method": METHOD, "max_top1_drop_points": request.evaluation.max_drop,
              "ranked_layers": len(first.ranking), "ranking_head": first.ranking[:SHOWN_BY_DEFAULT],
              "steps": [first_step.as_dict(), *(s.as_dict() for s in steps)]}
    kept = tried[steps[-1].kept_float][2] if steps else []
    line = summary_line(first_step, steps, kept) if steps else "accuracy search: no layer ranking to search"
    if not steps or not steps[-1].passed:
        first_artifact.notes.append(line)
        first_artifact.error = f"{first_artifact.error}; {line}"
        return first_artifact, first
    artifact, result, _ = tried[steps[-1].kept_float]
    artifact.notes.append(line)
    assert result.manifest is not None
    result.manifest["format_details"]["accuracy_search"] = {**record, "kept_float": kept}
    artifact.cost["accuracy_search"] = {"kept_float": kept, "steps": len(steps)}
    return artifact, result


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
    for flag in ("deploy", "verify", "arm64", "force", "accuracy_search"):
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
) -> _Attempt:
    """Convert into ``staged`` and verify; the attempt carries the manifest to write beside it, or none (artifact.error
    set) on failure."""
    result = _Attempt(staged)
    stage("converting")
    try:
        with native_stdout_to_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # converters' deprecation chatter; failures still raise
            conversion = fmt.convert(request, staged)
    except FatDeployError:
        raise
    except Exception as error:  # noqa: BLE001 - any converter failure is reported, not raised
        artifact.error = f"conversion failed: {_one_line(error)}"
        return result
    export_seconds = time.perf_counter() - started
    if conversion.explanation is not None:  # shown even if verification fails
        artifact.explain = conversion.explanation.worst_layers
        result.ranking = conversion.explanation.ranking
    result.size_bytes = size_of(staged) if staged.exists() else None
    if conversion.float_size_bytes is not None:
        artifact.cost["float_size_bytes"] = conversion.float_size_bytes
    if (latency := conversion.latency) is not None:
        artifact.cost["latency"] = latency.as_dict()
        result.speedup = latency.speedup
        if latency.speedup < WORTHWHILE_SPEEDUP:  # never shown as a plain success
            verdict = "slower than its float version" if latency.speedup < 1.0 else (
                f"under {WORTHWHILE_SPEEDUP}x its float version's speed")
            artifact.notes.append(f"{verdict}: {latency.speedup:.2f}x the speed ({latency.float_ms} -> "
                                  f"{latency.quantized_ms} ms, {latency.runtime}, 1 thread, {int8_isa()})")
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
            return result
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
    result.accuracy = verification.get("accuracy")
    if status == FAILED:
        artifact.error = "verification outside tolerance: " + "; ".join(artifact.notes)
        result.accuracy_failed = accuracy_problem(verification) is not None
        return result
    artifact.size_bytes = size_of(staged)
    result.manifest = build_manifest(request, fmt, staged, details, verification, status, export_seconds,
                                     checkpoint, labels_source, deploy)
    return result
