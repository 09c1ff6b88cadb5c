"""Timing primitives shared by the latency harness and the runtimes' quantization cost (float vs quantized)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.contract.session import Backend, LoadRequest, Runner

LATENCY_RUNS = 20


def time_runner(runner: Runner, prepared: Any, warmup: int, runs: int, min_seconds: float) -> tuple[float, list[float]]:
    """First-run ms, then ``warmup`` untimed runs, then at least ``runs`` timed runs and ``min_seconds``."""
    clock = time.perf_counter
    start = clock()
    runner.run(prepared)
    first_ms = (clock() - start) * 1e3
    for _ in range(warmup):
        runner.run(prepared)
    samples: list[float] = []
    begin = clock()
    while len(samples) < runs or (clock() - begin) < min_seconds:
        start = clock()
        runner.run(prepared)
        samples.append((clock() - start) * 1e3)
    return first_ms, samples


def time_interleaved(runs_of: dict[str, tuple[Runner, Any]], warmup: int, runs: int) -> dict[str, list[float]]:
    """Timed ms of several (runner, prepared input) pairs invoked in turn, so drift and noise hit all alike:
    ``warmup`` untimed rounds, then ``runs`` timed rounds (what a ratio between artifacts should be read from)."""
    samples: dict[str, list[float]] = {key: [] for key in runs_of}
    clock = time.perf_counter
    for round_index in range(warmup + runs):
        for key, (runner, prepared) in runs_of.items():
            start = clock()
            runner.run(prepared)
            if round_index >= warmup:
                samples[key].append((clock() - start) * 1e3)
    return samples


@dataclass(frozen=True)
class LatencyComparison:
    """A quantized file against its float version, timed alternately on one thread by the same runner."""

    runtime: str
    threads: int
    batch: int
    runs: int
    float_ms: float
    quantized_ms: float
    note: str = "quick interleaved measurement at export; benchmarks/quantization.py measures longer"

    @property
    def speedup(self) -> float:
        return round(self.float_ms / self.quantized_ms, 3)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


def artifact_latency(backend: Backend, float_path: Path, quant_path: Path, img_size: tuple[int, int],
                     batch: int = 1) -> LatencyComparison:
    """The speed side of a quantization's cost: float vs quantized file on one thread, each loaded by ``backend``
    (the runner the latency harness times) and timed alternately (one warm-up round); medians and the quantized
    file's speed-up."""
    inputs = np.random.default_rng(0).standard_normal((batch, 3, *img_size)).astype(np.float32)
    pairs: dict[str, tuple[Runner, Any]] = {}
    for key, path in (("float", float_path), ("quantized", quant_path)):
        runner = backend.load(LoadRequest(model_name="", model=None, artifact=Path(path), batch=batch,
                                          img_size=img_size, threads=1))
        pairs[key] = (runner, runner.prepare(inputs))
    samples = time_interleaved(pairs, warmup=1, runs=LATENCY_RUNS)
    float_ms, quantized_ms = statistics.median(samples["float"]), statistics.median(samples["quantized"])
    return LatencyComparison(runtime=f"{backend.package} {backend.version()} CPU", threads=1, batch=batch,
                             runs=LATENCY_RUNS, float_ms=round(float_ms, 3), quantized_ms=round(quantized_ms, 3))
