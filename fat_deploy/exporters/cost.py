"""The speed side of a quantization's cost: float vs quantized artifact on the host runtime, one thread."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

LATENCY_RUNS = 20


def artifact_latency(backend: str, float_path: Path, quant_path: Path, img_size: tuple[int, int],
                     batch: int = 1) -> dict[str, Any]:
    """Float vs quantized file on one thread, each loaded by the latency harness's own backend runner and timed
    alternately by the harness (one warm-up round); medians and the quantized file's speed-up."""
    import numpy as np

    from fat_deploy.latency.harness import time_interleaved
    from fat_deploy.runtimes import LoadRequest, get_backend

    runtime = get_backend(backend)
    inputs = np.random.default_rng(0).standard_normal((batch, 3, *img_size)).astype(np.float32)
    pairs = {}
    for key, path in (("float", float_path), ("quantized", quant_path)):
        runner = runtime.load(LoadRequest(model_name="", model=None, artifact=Path(path), batch=batch,
                                          img_size=img_size, threads=1))
        pairs[key] = (runner, runner.prepare(inputs))
    samples = time_interleaved(pairs, warmup=1, runs=LATENCY_RUNS)
    float_ms, quantized_ms = statistics.median(samples["float"]), statistics.median(samples["quantized"])
    return {"runtime": f"{runtime.package} {runtime.version()} CPU", "threads": 1, "batch": batch,
            "runs": LATENCY_RUNS, "float_ms": round(float_ms, 3), "quantized_ms": round(quantized_ms, 3),
            "speedup": round(float_ms / quantized_ms, 3),
            "note": "quick interleaved measurement at export; benchmarks/quantization.py measures longer"}
