"""onnxruntime's adapter for a process of its own (fat_deploy.common.probe): imports numpy and onnxruntime only,
so that it runs in the ARM64 emulation root and in fat-latency's fresh-process measurement. Runs .onnx and .ort."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

RUNTIME = "onnxruntime"


def version() -> str:
    return str(ort.__version__)


def import_runtime() -> None:
    """onnxruntime is imported with this module."""


def load(artifact: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
    source = session.get_inputs()[0]

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {source.name: np.ascontiguousarray(batch, np.float32)})[0], np.float32)

    run.batch = source.shape[0] if isinstance(source.shape[0], int) else 1  # type: ignore[attr-defined]
    return run
