"""MNN (https://github.com/alibaba/MNN) on this host's CPU: a module loaded with the timed thread count.

Two settings change what MNN computes, so every load here makes them explicit: ``precision`` "high" (fp32 arithmetic;
"low" asks for fp16 where the CPU has it, ARMv8.2 phones) and the Winograd hint (``WINOGRAD_MEMORY_LEVEL``, hint 3):
at MNN's default level (3) a dense stride-1 3x3 convolution runs large Winograd tiles, measured here at 7.2e-3 max
abs error on one 64-channel convolution against onnxruntime's 7.6e-6 at level 0 and 2.9e-6 at level 1, so level 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.contract.session import Backend, BackendError, LoadRequest, Runner
from fat_deploy.environment import native_stdout_to_stderr
from fat_deploy.runtimes.mnn.standalone import INPUT_NAME, OUTPUT_NAME, create_runtime_manager


def runtime_manager(threads: int) -> Any:
    """fp32 arithmetic, ``threads`` threads, the accurate Winograd level (MNN prints its CPU features on stdout from
    C++ when first imported: sent to stderr, which the CLIs show only with --verbose)."""
    with native_stdout_to_stderr():
        import MNN

        return create_runtime_manager(MNN, threads)


class MnnRunner(Runner):
    def __init__(self, module: Any) -> None:
        self.module = module

    def prepare(self, batch: np.ndarray) -> tuple[np.ndarray, Any]:
        """The batch as an MNN constant; the array is kept with it (``expr.const`` reads the numpy buffer, not a
        copy of it)."""
        import MNN

        array = np.ascontiguousarray(batch, dtype=np.float32)
        return array, MNN.expr.const(array, list(array.shape), MNN.expr.NCHW)

    def run(self, prepared: Any) -> Any:
        return self.module.forward([prepared[1]])[0].read()

    def logits(self, prepared: Any) -> np.ndarray:
        return np.array(self.module.forward([prepared[1]])[0].read(), dtype=np.float32)


class MnnBackend(Backend):
    name = "mnn"
    package = "MNN"
    artifact_format = "mnn"
    devices = ("cpu",)
    device_notes = {"cuda": "cuda: MNN's GPU backends (OpenCL, Vulkan, Metal) are for phones; not run here"}
    module, extra = "MNN", "mnn"
    standalone_adapter = Path(__file__).with_name("standalone.py")

    def load(self, request: LoadRequest) -> Runner:
        assert request.artifact is not None
        manager = runtime_manager(request.threads)
        with native_stdout_to_stderr():
            import MNN

            try:
                module = MNN.nn.load_module_from_file(str(request.artifact), [INPUT_NAME], [OUTPUT_NAME],
                                                      runtime_manager=manager)
            except Exception as error:  # noqa: BLE001 - a damaged file is the user's
                raise BackendError(f"MNN cannot load {request.artifact}: {str(error).splitlines()[0][:200]}") from None
            if module is None:
                raise BackendError(f"MNN cannot load {Path(request.artifact).name}")
            shape = list(MNN.expr.load_as_dict(str(request.artifact))[INPUT_NAME].shape)
        expected = [request.batch, 3, *request.img_size]
        if shape != expected:  # MNN would resize the graph to any input and time another model than recorded
            raise BackendError(f"artifact {Path(request.artifact).name} takes input {shape}, not {expected}; "
                               "re-export it or change --batch/--img-size")
        return MnnRunner(module)
