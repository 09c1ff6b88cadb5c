"""The speed side of a quantization's cost: float vs quantized artifact on the host runtime, one thread."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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


def onnx_latency(float_path: Any, quant_path: Any, shape: tuple[int, ...], input_name: str) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    feed = {input_name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (float_path, quant_path)]
    return latency_ratio(lambda: sessions[0].run(None, feed), lambda: sessions[1].run(None, feed),
                         runtime=f"onnxruntime {ort.__version__} CPU")


def tflite_latency(float_path: Any, quant_path: Any) -> dict[str, Any]:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from fat_deploy.environment import package_version
    from fat_deploy.exporters.tflite import to_input_dtype

    runners = []
    for path in (float_path, quant_path):
        interpreter = Interpreter(str(path), num_threads=1)
        interpreter.allocate_tensors()
        (source,) = interpreter.get_input_details()
        values = np.random.default_rng(0).standard_normal(source["shape"]).astype(np.float32)
        interpreter.set_tensor(source["index"], to_input_dtype(values, source))
        runners.append(interpreter.invoke)
    return latency_ratio(runners[0], runners[1], runtime=f"ai-edge-litert {package_version('ai-edge-litert')} XNNPACK")
