"""A runtime's artifact run in a process of its own: the script a child Python executes, importing the standard
library, numpy and one runtime's *adapter* only (never fat_deploy, torch or another runtime).

An adapter is a small module of a runtime package (``Backend.standalone_adapter``) with ``RUNTIME`` (the distribution
name), ``version()``, ``import_runtime()`` (imports what loading needs: the import is timed and its memory is the
baseline) and ``load(artifact, threads) -> run`` where ``run`` maps an NCHW float32 batch to float32 logits. Two commands:

* ``run ADAPTER ARTIFACT INPUTS.npy OUTPUTS.npy``: every input, batch by batch (the file's batch), outputs saved
  (the ARM64 emulation runs this with the aarch64 Python: :mod:`fat_deploy.common.aarch64`);
* ``measure ADAPTER ARTIFACT BATCH HEIGHT WIDTH THREADS RUNS``: what an app pays (fat-latency's fresh-process
  columns): resident memory after importing the runtime (the baseline), after loading the file, at the peak of the
  first run and of ``RUNS`` steady runs (Linux's VmHWM, reset before each phase through ``/proc/self/clear_refs``),
  and the wall-clock time of import, load, first run and each steady run.

Either prints one JSON object on its last line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

MIB = 1024 * 1024


def _adapter(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("fat_deploy_adapter", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the adapter {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _status_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _batches(inputs: np.ndarray, batch: int) -> list[tuple[np.ndarray, int]]:
    groups = []
    for start in range(0, len(inputs), batch):
        group = inputs[start:start + batch]
        groups.append((np.concatenate([group, np.repeat(group[-1:], batch - len(group), axis=0)]), len(group)))
    return groups


def run(adapter_path: str, artifact: str, inputs_path: str, outputs_path: str) -> dict[str, Any]:
    adapter = _adapter(adapter_path)
    adapter.import_runtime()
    invoke: Callable[[np.ndarray], np.ndarray] = adapter.load(artifact, 1)
    inputs = np.load(inputs_path)
    size = int(getattr(invoke, "batch", 1))
    outputs = [invoke(group)[:count] for group, count in _batches(inputs, size)]
    np.save(outputs_path, np.concatenate(outputs).astype(np.float32))
    return {"runtime": adapter.RUNTIME, "version": adapter.version()}


def measure(adapter_path: str, artifact: str, batch: int, height: int, width: int, threads: int,
            runs: int) -> dict[str, Any]:
    started = time.time()
    adapter = _adapter(adapter_path)
    adapter.import_runtime()
    imported = time.time()
    baseline = _status_kib("VmRSS")
    peaks_resettable = _reset_peak()
    invoke = adapter.load(artifact, threads)
    loaded = time.time()
    after_load, load_peak = _status_kib("VmRSS"), _status_kib("VmHWM")
    inputs = np.random.default_rng(0).standard_normal((batch, 3, height, width)).astype(np.float32)
    _reset_peak()
    invoke(inputs)
    first = time.time()
    first_peak = _status_kib("VmHWM")
    _reset_peak()
    steady = []
    for _ in range(runs):
        tick = time.perf_counter()
        invoke(inputs)
        steady.append((time.perf_counter() - tick) * 1e3)
    steady_peak = _status_kib("VmHWM")

    def delta(value: int | None) -> float | None:
        return None if value is None or baseline is None else round((value - baseline) / 1024, 1)

    return {
        "runtime": adapter.RUNTIME, "version": adapter.version(),
        "started_unix": started, "first_result_unix": first,
        "import_ms": round((imported - started) * 1e3, 1), "load_ms": round((loaded - imported) * 1e3, 1),
        "first_run_ms": round((first - loaded) * 1e3, 2), "steady_ms": [round(v, 3) for v in steady],
        "baseline_mb": None if baseline is None else round(baseline / 1024, 1),
        "load_delta_mb": delta(after_load), "load_peak_delta_mb": delta(load_peak if peaks_resettable else None),
        "first_run_peak_delta_mb": delta(first_peak if peaks_resettable else None),
        "steady_peak_delta_mb": delta(steady_peak if peaks_resettable else None),
    }


def main(argv: list[str]) -> None:
    # Runtimes print from C++ on stdout (MNN's CPU features, flushed at exit when stdout is a pipe): everything but
    # the result goes to stderr, the result to the original stdout.
    sys.stdout.flush()
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    command, rest = argv[0], argv[1:]
    if command == "run":
        adapter_path, artifact, inputs_path, outputs_path = rest
        result = run(adapter_path, artifact, inputs_path, outputs_path)
    elif command == "measure":
        adapter_path, artifact, *numbers = rest
        result = measure(adapter_path, artifact, *(int(n) for n in numbers))
    else:
        raise SystemExit(f"unknown command {command!r}")
    result_stream.write(json.dumps(result) + "\n")
    result_stream.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
