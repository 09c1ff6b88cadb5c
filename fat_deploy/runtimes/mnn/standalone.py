"""MNN's adapter for a process of its own (fat_deploy.common.probe), and the runtime settings every MNN load here
uses (the session imports them from here; see its docstring for why). Imports numpy, and MNN only when loading."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version as distribution_version
from typing import Any

import numpy as np

RUNTIME = "MNN"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
PRECISION = "high"
WINOGRAD_HINT, WINOGRAD_LEVEL = 3, 1  # Interpreter::HintMode::WINOGRAD_MEMORY_LEVEL


def create_runtime_manager(mnn: Any, threads: int) -> Any:
    """fp32 arithmetic, ``threads`` threads, the accurate Winograd level, from the imported ``MNN`` module."""
    manager = mnn.nn.create_runtime_manager(({"precision": PRECISION, "numThread": threads, "backend": "CPU"},))
    manager.set_hint(WINOGRAD_HINT, WINOGRAD_LEVEL)
    return manager


def version() -> str:
    return distribution_version(RUNTIME)


def import_runtime() -> None:
    import MNN  # noqa: F401


def load(artifact: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import MNN

    module = MNN.nn.load_module_from_file(artifact, [INPUT_NAME], [OUTPUT_NAME],
                                          runtime_manager=create_runtime_manager(MNN, threads))

    def run(batch: np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(batch, dtype=np.float32)
        return np.array(module.forward([MNN.expr.const(array, list(array.shape), MNN.expr.NCHW)])[0].read(),
                        dtype=np.float32)

    run.batch = int(MNN.expr.load_as_dict(artifact)[INPUT_NAME].shape[0])  # type: ignore[attr-defined]
    return run
