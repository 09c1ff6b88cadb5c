"""ExecuTorch's adapter for a process of its own (fat_deploy.common.probe). Imports numpy, and executorch only when
loading. ExecuTorch's Python runtime bindings import torch (their tensors are torch tensors), so a fresh process's
baseline here holds torch too; an app links the C++ runtime without it, so only the deltas over the baseline say
what the program costs."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version as distribution_version

import numpy as np

RUNTIME = "executorch"


def version() -> str:
    return distribution_version(RUNTIME)


def import_runtime() -> None:
    import torch  # noqa: F401
    from executorch.runtime import Runtime  # noqa: F401


def load(artifact: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's process-wide pool, before any method runs
    program = Runtime.get().load_program(artifact)
    method = program.load_method("forward")

    def run(batch: np.ndarray) -> np.ndarray:
        (output,) = method.execute([torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))])
        return np.asarray(output.detach().numpy(), dtype=np.float32)

    run.keep_alive = program  # type: ignore[attr-defined]  # the program owns the method's memory
    run.batch = int(method.metadata.input_tensor_meta(0).sizes()[0])  # type: ignore[attr-defined]
    return run
