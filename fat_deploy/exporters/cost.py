"""The speed side of a quantization's cost: float vs quantized artifact on the host runtime, one thread."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LATENCY_RUNS = 20


def latency_ratio(run_float: Callable[[], Any], run_quantized: Callable[[], Any], runs: int = LATENCY_RUNS,
                  runtime: str = "") -> dict[str, Any]:
    """Median ms of each (interleaved, after one warm-up run each) and the speed-up of the quantized one."""
    run_float(), run_quantized()
    samples: dict[str, list[float]] = {"float": [], "quantized": []}
    for _ in range(runs):
        for key, run in (("float", run_float), ("quantized", run_quantized)):
            start = time.perf_counter()
            run()
            samples[key].append((time.perf_counter() - start) * 1e3)
    float_ms, quantized_ms = statistics.median(samples["float"]), statistics.median(samples["quantized"])
    return {"runtime": runtime, "threads": 1, "batch": 1, "runs": runs, "float_ms": round(float_ms, 3),
            "quantized_ms": round(quantized_ms, 3), "speedup": round(float_ms / quantized_ms, 3),
            "note": "quick interleaved measurement at export; benchmarks/quantization.py measures longer"}


def artifact_latency(backend: str, float_path: Path, quant_path: Path, img_size: tuple[int, int],
                     batch: int = 1) -> dict[str, Any]:
    """Float vs quantized file on one thread, each loaded by the latency harness's own backend runner."""
    import numpy as np

    from fat_deploy.runtimes import LoadRequest, get_backend

    runtime = get_backend(backend)
    inputs = np.random.default_rng(0).standard_normal((batch, 3, *img_size)).astype(np.float32)
    runs = []
    for path in (float_path, quant_path):
        runner = runtime.load(LoadRequest(model_name="", model=None, artifact=Path(path), batch=batch,
                                          img_size=img_size, threads=1))
        prepared = runner.prepare(inputs)
        runs.append(lambda runner=runner, prepared=prepared: runner.run(prepared))
    return latency_ratio(runs[0], runs[1], runtime=f"{runtime.package} {runtime.version()} CPU")
