"""ExecuTorch's Python runtime (``executorch.runtime``) with the XNNPACK backend, on CPU.

Per-op times come from ExecuTorch's own event tracer: a second program loaded with ETDump on, read back with the
devtools ``Inspector`` (XNNPACK's per-operator events and the portable kernels' ones).

The runtime has no per-session thread setting: XNNPACK runs on ExecuTorch's process-wide thread pool. We size
that pool to ``--threads`` through the pybindings' ``_unsafe_reset_threadpool`` (unsafe only while a method runs;
we reset before loading) and read the size back; if it does not match, the request is refused, never ignored.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.contract.session import Backend, BackendError, LoadRequest, OpTime, ProfileUnavailable, Runner

# Events that wrap other events (the method, a delegate call, an operator call): left out so nothing counts twice.
WRAPPER_EVENTS = frozenset({"Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"})


def event_op_type(name: str, delegated: bool) -> str:
    """``Convolution (NHWC, F32) IGEMM #3`` -> ``XNNPACK Convolution (NHWC, F32) IGEMM``;
    ``native_call_native_layer_norm.out`` -> ``portable native_layer_norm``."""
    if delegated:
        return "XNNPACK " + name.split(" #")[0]
    return "portable " + name.removeprefix("native_call_").removesuffix(".out")


class ExecuTorchRunner(Runner):
    def __init__(self, program: Any, method: Any, path: Path) -> None:
        self.program, self.method = program, method  # the program owns the method's memory: keep it alive
        self.path = path

    def prepare(self, batch: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))

    def run(self, prepared: Any) -> Any:
        return self.method.execute([prepared])

    def logits(self, prepared: Any) -> np.ndarray:
        (output,) = self.run(prepared)
        logits: np.ndarray = output.detach().numpy().astype(np.float32, copy=True)
        return logits

    def op_times(self, prepared: Any, runs: int, trace: Path | None = None) -> list[OpTime]:
        """ETDump events of ``runs`` invocations on a separately loaded program (the first run is left out)."""
        from executorch.devtools import Inspector
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(self.path, enable_etdump=True)
        method = program.load_method("forward")
        for _ in range(runs + 1):
            method.execute([prepared])
        with tempfile.TemporaryDirectory() as folder:
            etdump, buffer = Path(folder) / "profile.etdp", Path(folder) / "debug.bin"
            program.write_etdump_result_to_file(str(etdump), str(buffer))
            if not etdump.exists():
                raise ProfileUnavailable("executorch: this runtime build wrote no ETDump (built without the event tracer)")
            inspector = Inspector(etdump_path=str(etdump))
        times = []
        for block in inspector.event_blocks:
            if block.name != "Execute":
                continue
            for index, event in enumerate(block.events):
                samples = (event.perf_data.raw if event.perf_data else [])[1:]
                if event.name in WRAPPER_EVENTS or not samples:
                    continue
                # XNNPACK numbers ops per delegate ("#1" in each): the event's position makes the name unique.
                times.append(OpTime(f"{event.name} [event {index}]",
                                    event_op_type(event.name, bool(event.is_delegated_op)),
                                    sum(samples) * 1e3, len(samples)))  # Inspector reports ms
        if not times:
            raise ProfileUnavailable("executorch: the ETDump held no per-op events")
        return times


def set_thread_count(threads: int) -> None:
    """Size ExecuTorch's process-wide thread pool (XNNPACK's workers) to ``threads``, or refuse."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)
    actual = portable_lib._threadpool_get_thread_count()
    if actual != threads:
        raise BackendError(f"executorch: asked for {threads} threads, its thread pool has {actual}; "
                           "--threads cannot be honoured here")


class ExecuTorchBackend(Backend):
    name = "executorch"
    package = "executorch"
    artifact_format = "executorch"
    module, extra = "executorch", "executorch"
    profiler = "ETDump: XNNPACK and portable kernels"
    standalone_adapter = Path(__file__).with_name("standalone.py")
    device_notes = {"cuda": "cuda: executorch runs .pte programs on CPU (XNNPACK) here; its GPU delegates are "
                            "device-only"}

    def load(self, request: LoadRequest) -> Runner:
        from executorch.runtime import Runtime

        assert request.artifact is not None
        set_thread_count(request.threads)
        try:
            program = Runtime.get().load_program(request.artifact)
            method = program.load_method("forward")
        except Exception as error:  # noqa: BLE001
            raise BackendError(f"executorch cannot load {request.artifact}: {str(error).splitlines()[0][:200]}") from None
        shape = list(method.metadata.input_tensor_meta(0).sizes())
        expected = [request.batch, 3, *request.img_size]
        if shape != expected:
            raise BackendError(f"artifact {request.artifact.name} takes input {shape}, not {expected}; "
                               "re-export it or change --batch/--img-size")
        return ExecuTorchRunner(program, method, request.artifact)
