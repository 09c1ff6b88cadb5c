"""Warm-up, timed runs, and the record each measurement leaves (with its environment).

Only the model invocation on a prepared input is timed. Session/interpreter creation and the
first invocation are timed separately and reported as init and first-run.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fat_deploy.environment import host_info, package_version
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters.manifest import sha256_of
from fat_deploy.latency.backends import BackendError, LoadRequest, get_backend
from fat_deploy.latency.stats import summarize
from fat_deploy.models.registry import create_model, get_spec

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
    stats: dict[str, float] | None = None
    init_ms: float | None = None
    first_run_ms: float | None = None
    peak_rss_mb: float | None = None
    peak_device_mb: float | None = None
    warmup: int = 0
    artifact: str | None = None
    artifact_sha256: str | None = None
    deploy_form: bool = True
    timed: str = TIMED
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
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
    for name in ("onnxruntime", "ai-edge-litert", "coremltools"):
        if version := package_version(name):
            env[name] = version
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


def time_runner(runner: Any, prepared: Any, warmup: int, runs: int, min_seconds: float) -> tuple[float, list[float]]:
    """First-run ms, then ``warmup`` untimed runs, then at least ``runs`` timed runs and ``min_seconds``."""
    start = time.perf_counter()
    runner.run(prepared)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        runner.run(prepared)
    samples: list[float] = []
    clock = time.perf_counter
    begin = clock()
    while len(samples) < runs or (clock() - begin) < min_seconds:
        start = clock()
        runner.run(prepared)
        samples.append((clock() - start) * 1e3)
    return first_ms, samples


def check_settings(threads: int, batch: int, warmup: int, runs: int, min_seconds: float) -> None:
    if threads < 1:
        raise BackendError(f"--threads must be at least 1, got {threads}")
    if batch < 1:
        raise BackendError(f"--batch must be at least 1, got {batch}")
    if warmup < 0 or runs < 1 or min_seconds < 0:
        raise BackendError("--warmup must be >= 0, --runs >= 1 and --min-seconds >= 0")


def artifact_for(model_name: str, fmt: str, precision: str, img_size: tuple[int, int], batch: int,
                 checkpoint: str | Path | None, cache_dir: Path) -> Path:
    """Export (and verify) the artifact the backend runs, reusing an earlier one from the cache."""
    from fat_deploy.exporters import export

    folder = cache_dir / f"{img_size[0]}x{img_size[1]}_b{batch}" / (
        sha256_of(Path(checkpoint))[:12] if checkpoint else "random-init")
    from fat_deploy.exporters.registry import get_format

    target = folder / get_format(fmt).artifact_name(model_name, precision, {})
    if target.exists():
        return target
    artifact = export(model_name, fmt, precision, folder, checkpoint=checkpoint, img_size=img_size, batch=batch,
                      force=True)
    if artifact.path is None:
        raise FatDeployError(f"could not export {model_name} to {fmt} {precision}: {artifact.error}")
    return artifact.path


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
) -> Measurement:
    """Time one model on one backend. Unavailable backends return a record with the reason."""
    check_settings(threads, batch, warmup, runs, min_seconds)
    from fat_deploy.exporters.api import resolve_img_size

    spec = get_spec(model)
    size = resolve_img_size(img_size, spec)
    runtime = get_backend(backend)
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
    elif runtime.artifact_format is None:
        from fat_deploy.models.deploy import to_deploy

        torch_model = create_model(spec.name, checkpoint=checkpoint)
        torch_model = to_deploy(torch_model) if deploy else torch_model
    else:
        cache = Path(cache_dir or os.environ.get("FAT_DEPLOY_CACHE", Path.home() / ".cache" / "fat-deploy"))
        artifact_path = artifact_for(spec.name, runtime.artifact_format, precision, size, batch, checkpoint, cache)
    if artifact_path is not None:
        record.artifact, record.artifact_sha256 = str(artifact_path), sha256_of(artifact_path)
    request = LoadRequest(model_name=spec.name, model=torch_model, artifact=artifact_path, batch=batch,
                          img_size=size, threads=threads, device=device, precision=precision,
                          channels_last=channels_last)
    start = time.perf_counter()
    runner = runtime.load(request)
    record.init_ms = (time.perf_counter() - start) * 1e3
    inputs = np.random.default_rng(seed).standard_normal((batch, 3, *size)).astype(np.float32)
    prepared = runner.prepare(inputs)
    record.first_run_ms, samples = time_runner(runner, prepared, warmup, runs, min_seconds)
    record.stats = summarize(samples, batch).as_dict()
    record.peak_rss_mb = _peak_rss_mb()
    record.peak_device_mb = runner.peak_device_memory_mb()
    return record
