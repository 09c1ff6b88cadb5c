"""Warm-up, timed runs, and the record each measurement leaves (with its environment).

Only the model invocation on a prepared input is timed. Session/interpreter creation and the
first invocation are timed separately and reported as init and first-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fat_deploy import version as version_module
from fat_deploy.common.files import sha256_of, size_of
from fat_deploy.contract.session import BackendError, LoadRequest, Runner
from fat_deploy.contract.timing import time_runner
from fat_deploy.environment import available_cores, cache_root, check_input_budget, host_info
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export
from fat_deploy.exporters.api import resolve_img_size
from fat_deploy.exporters.manifest import manifest_path_for
from fat_deploy.exporters.placement import PlacementError
from fat_deploy.latency.end_to_end import app_form, encoded_photos, plain_file
from fat_deploy.latency.fresh import measure_fresh_process
from fat_deploy.latency.op_profile import profile_ops
from fat_deploy.latency.stats import HostLoad, busy_host_problem, noise_problem, summarize
from fat_deploy.models.deploy import to_deploy
from fat_deploy.models.registry import create_model, get_spec
from fat_deploy.precision import parse_precision
from fat_deploy.registry import backends, check_device, get_backend, get_format, recorded_versions
from fat_deploy.validation import require_img_size, require_int, require_number, require_path, require_str

log = logging.getLogger("fat_deploy")

TIMED = "model invocation only, on an input prepared before timing"
RECORD_VERSION = 1


@dataclass
class Measurement:
    """One model on one backend/device/configuration: timings, or the reason there are none."""

    model: str
    backend: str
    device: str
    precision: str
    batch: int
    img_size: tuple[int, int]
    threads: int
    status: str  # "ok" | "unavailable" | "error"
    reason: str | None = None
    note: str | None = None  # caveat on an "ok" record (e.g. an artifact whose identity could not be checked)
    op_profile: dict[str, Any] | None = None  # --profile: per-op times from the runtime's profiler, or why none
    stats: dict[str, float] | None = None
    init_ms: float | None = None
    first_run_ms: float | None = None
    peak_rss_mb: float | None = None
    peak_device_mb: float | None = None
    # What an app pays, from a process that imports only the runtime (fat_deploy.latency.fresh): memory deltas over
    # its baseline, load and first-run times, process start to first result; None where there is no file to load.
    fresh_process: dict[str, Any] | None = None
    # --end-to-end: image-to-label stages on JPEG files, for the plain file and the format's app-ready form
    # (fat_deploy.latency.end_to_end).
    end_to_end: list[dict[str, Any]] | None = None
    warmup: int = 0
    artifact: str | None = None
    artifact_sha256: str | None = None
    artifact_size_bytes: int | None = None
    deploy_form: bool = True
    timed: str = TIMED
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    record_version: int = RECORD_VERSION

    @property
    def median_ms(self) -> float | None:
        return self.stats["median_ms"] if self.stats else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["img_size"] = list(self.img_size)
        return data


def environment(backend: str, threads: int, device: str) -> dict[str, Any]:
    """Host, thread count and runtime versions that go with every record."""
    env: dict[str, Any] = {**host_info(), "threads": threads, "torch": torch.__version__}
    for runtime_backend in backends().values():
        if version := runtime_backend.version():
            env[runtime_backend.package] = version
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        env["gpu_driver"] = _nvidia_driver()
    return env


def _nvidia_driver() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def check_settings(threads: int, batch: int, warmup: int, runs: int, min_seconds: float) -> None:
    """Types and ranges of the timing settings; more threads than cores is refused (it times contention)."""
    require_int("--threads", threads, minimum=1)
    require_int("--batch", batch, minimum=1)
    require_int("--warmup", warmup, minimum=0)
    require_int("--runs", runs, minimum=1)
    require_number("--min-seconds", min_seconds, minimum=0)
    if threads > (cores := available_cores()):
        raise BackendError(f"--threads {threads} is more than the {cores} CPU core(s) available here: "
                           "the timings would measure contention, not the model")


def artifact_for(model_name: str, fmt: str, precision: str, img_size: tuple[int, int], batch: int,
                 checkpoint: str | Path | None, cache_dir: Path, options: dict[str, Any] | None = None) -> Path:
    """Export (and verify) the artifact the backend runs, reusing an earlier one from the cache.

    The cache is keyed by what produced the file (fat-deploy's code and the converters' versions), and a
    cached file is used only while its sha256 still matches its manifest; otherwise it is exported again.
    """

    folder = cache_dir / producer_key() / f"{img_size[0]}x{img_size[1]}_b{batch}" / (
        sha256_of(Path(checkpoint))[:12] if checkpoint else "random-init")
    target = folder / get_format(fmt).artifact_name(model_name, parse_precision(precision), options or {})
    if cached_artifact_problem(target, model_name, fmt, precision) is None:
        return target
    try:
        artifact = export(model_name, fmt, precision, folder, checkpoint=checkpoint, img_size=img_size, batch=batch,
                          force=True, **(options or {}))
    except PlacementError:  # another run put the same artifact in place meanwhile: use it if it checks out
        if cached_artifact_problem(target, model_name, fmt, precision) is None:
            return target
        raise
    if artifact.path is None:
        raise FatDeployError(f"could not export {model_name} to {fmt} {precision}: {artifact.error}")
    return artifact.path


@cache
def producer_key() -> str:
    """Short digest of fat-deploy's own code and the tool versions: a new converter or code, a new cache entry."""
    digest = hashlib.sha256(json.dumps(recorded_versions(), sort_keys=True).encode())
    package = Path(version_module.__file__).parent
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def cached_artifact_problem(path: Path, model: str, fmt: str, precision: str) -> str | None:
    """Why a cached artifact cannot be used as is (missing, no manifest, changed since export), or None."""
    problem = artifact_manifest_problem(path, {"model": model, "format": fmt, "precision": precision})
    return "no manifest" if problem is None and not manifest_path_for(path).exists() else problem


def artifact_manifest_problem(path: Path, expected: dict[str, Any]) -> str | None:
    """Whether ``path`` is the artifact its manifest describes, with the ``expected`` manifest fields.

    None when it is, or when there is no manifest to check against (the caller decides what that means).
    """
    if not os.path.lexists(path):
        return f"{path} does not exist"
    manifest_path = manifest_path_for(path)
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        recorded = manifest["file"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its manifest {manifest_path} is unreadable"
    if sha256_of(path) != recorded:
        return f"{path} is not the file its manifest {manifest_path.name} describes (sha256 differs)"
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"{path} was exported with {key} {manifest.get(key)!r}, not {value!r} (per {manifest_path.name})"
    return None  # input shapes are checked by the backend when it loads the file


END_TO_END_REPEATS = 3


def image_to_label(runner: Runner, backend: str, artifact_format: str | None, model: str, precision: str,
                   size: tuple[int, int], checkpoint: str | Path | None, cache: Path,
                   app_form_too: bool) -> list[dict[str, Any]]:
    """--end-to-end: the plain file's four stages, then the format's app-ready form (exported into the cache)."""
    photos = encoded_photos()
    forms = [plain_file(runner, get_spec(model), size, photos, END_TO_END_REPEATS, backend).as_dict()]
    fmt = get_format(artifact_format) if artifact_format else None
    if fmt is None or fmt.app_option is None or not app_form_too:
        return forms
    path = artifact_for(model, fmt.name, precision, size, 1, checkpoint, cache, {fmt.app_option: True})
    classifier = fmt.app_classifier(path)
    if classifier is not None:
        flag = "--" + fmt.app_option.replace("_", "-")
        forms.append(app_form(classifier, f"{flag} file", photos, END_TO_END_REPEATS).as_dict())
    return forms


def measure(
    model: str,
    backend: str = "onnxruntime",
    *,
    device: str = "cpu",
    threads: int = 1,
    batch: int = 1,
    img_size: int | tuple[int, int] | None = None,
    precision: str = "fp32",
    checkpoint: str | Path | None = None,
    artifact: str | Path | None = None,
    warmup: int = 10,
    runs: int = 50,
    min_seconds: float = 0.0,
    deploy: bool = True,
    channels_last: bool = False,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    profile_runs: int = 0,
    fresh_process: bool = True,
    end_to_end: bool = False,
    trace_dir: str | Path | None = None,
) -> Measurement:
    """Time one model on one backend. Unavailable backends return a record with the reason."""
    require_str("model", model)
    require_str("backend", backend)
    require_str("precision", precision)
    require_img_size(img_size)
    require_path("checkpoint", checkpoint, optional=True)
    require_path("artifact", artifact, optional=True)
    require_path("cache_dir", cache_dir, optional=True)
    cache = Path(cache_dir or os.environ.get("FAT_DEPLOY_CACHE") or cache_root())  # the exports timed and reused
    check_device(device)
    check_settings(threads, batch, warmup, runs, min_seconds)
    require_int("--profile", profile_runs, minimum=0)
    if end_to_end and batch != 1:
        raise BackendError("--end-to-end times one photo at a time: leave --batch at 1")

    spec = get_spec(model)
    size = resolve_img_size(img_size, spec)
    runtime = get_backend(backend)
    # The host-memory estimate is for exporting; a backend that runs the nn.Module (torch, also on a GPU at the
    # paper's throughput batch of 128) is held only to the hard bounds.
    check_input_budget(batch, size, exporting=runtime.artifact_format is not None and artifact is None)
    record = Measurement(model=spec.name, backend=runtime.name, device=device, precision=precision, batch=batch,
                         img_size=size, threads=threads, status="ok", warmup=warmup, deploy_form=deploy,
                         environment=environment(runtime.name, threads, device))
    if reason := runtime.unavailable_reason(device):
        record.status, record.reason = "unavailable", reason
        return record
    torch_model = None
    artifact_path: Path | None = None
    if artifact is not None:
        artifact_path = Path(artifact)
        if not artifact_path.exists():
            raise BackendError(f"artifact not found: {artifact_path}")
        if runtime.artifact_format is None:
            raise BackendError(f"the {runtime.name} backend times a model, not an artifact file; drop --artifact")
        expected = {"model": spec.name, "format": runtime.artifact_format, "precision": precision}
        if problem := artifact_manifest_problem(artifact_path, expected):
            raise BackendError(f"--artifact: {problem}")
        if not manifest_path_for(artifact_path).exists():
            record.note = (f"artifact identity unchecked: no manifest {manifest_path_for(artifact_path).name} "
                             f"beside it, so it is recorded as {spec.name} {precision} on the user's word")
            log.warning("%s", record.note)
    elif runtime.artifact_format is None:
        torch_model = create_model(spec.name, checkpoint=checkpoint)
        torch_model = to_deploy(torch_model) if deploy else torch_model
    else:
        artifact_path = artifact_for(spec.name, runtime.artifact_format, precision, size, batch, checkpoint, cache)
    if artifact_path is not None:
        record.artifact, record.artifact_sha256 = str(artifact_path), sha256_of(artifact_path)
        record.artifact_size_bytes = size_of(artifact_path)
    request = LoadRequest(model_name=spec.name, model=torch_model, artifact=artifact_path, batch=batch,
                          img_size=size, threads=threads, device=device, precision=parse_precision(precision),
                          channels_last=channels_last)
    start = time.perf_counter()
    runner = runtime.load(request)
    record.init_ms = (time.perf_counter() - start) * 1e3
    inputs = np.random.default_rng(seed).standard_normal((batch, 3, *size)).astype(np.float32)
    prepared = runner.prepare(inputs)
    load = HostLoad()
    record.first_run_ms, samples = time_runner(runner, prepared, warmup, runs, min_seconds)
    others = load.others_share()
    stats = summarize(samples, batch)
    record.stats = stats.as_dict()
    if others is not None:
        record.stats["others_cpu_share"] = round(others, 4)
    for problem in (noise_problem(stats), busy_host_problem(others)):  # a median is only as good as the machine
        if problem:
            record.note = f"{record.note}; {problem}" if record.note else problem
            log.warning("%s on %s: %s", spec.name, runtime.name, problem)
    record.peak_rss_mb = _peak_rss_mb()
    record.peak_device_mb = runner.peak_device_memory_mb()
    adapter = runtime.standalone_adapter
    if fresh_process and adapter is not None and artifact_path is not None and device == "cpu":
        record.fresh_process = measure_fresh_process(adapter, artifact_path, batch, size, threads,
                                                     max(5, min(runs, 20)))
    if end_to_end:
        record.end_to_end = image_to_label(runner, runtime.name, runtime.artifact_format, spec.name, precision, size,
                                           checkpoint, cache, app_form_too=artifact is None)
    if profile_runs:  # after timing, never inside it: profilers slow the runs they observe

        trace = (Path(trace_dir) / f"{spec.name}_{runtime.name}_{precision}.trace.json") if trace_dir else None
        record.op_profile = profile_ops(runner, prepared, profile_runs, f"{runtime.name} profiler", trace)
    return record
