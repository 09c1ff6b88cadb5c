"""onnxruntime: CPU execution provider with intra/inter-op threads; CUDA EP where installed."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fat_deploy.contract.session import (
    Backend,
    BackendError,
    LoadRequest,
    OpTime,
    ProfileUnavailable,
    Runner,
)


class OrtRunner(Runner):
    def __init__(self, session: Any, make_session: Callable[[bool, str], Any]) -> None:
        self.session = session
        self.make_session = make_session  # a new session, with profiling on or off
        self.input_name = session.get_inputs()[0].name

    def op_times(self, prepared: Any, runs: int, trace: Path | None = None) -> list[OpTime]:
        """onnxruntime's session profiling, on a separate session (profiling slows the one that is timed).

        The first run is left out: it includes one-time work (allocations, kernel selection).
        """
        with tempfile.TemporaryDirectory() as folder:
            session = self.make_session(True, str(Path(folder) / "ort_profile"))
            for _ in range(runs + 1):
                session.run(None, prepared)
            written = Path(session.end_profiling())
            events = json.loads(written.read_text(encoding="utf-8"))
            if trace is not None:  # onnxruntime's profile is Chrome trace format already
                shutil.copyfile(written, trace)
        model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                            if e.get("cat") == "Session" and e.get("name") == "model_run")
        if len(model_runs) != runs + 1:
            raise ProfileUnavailable(f"onnxruntime's profile holds {len(model_runs)} runs, expected {runs + 1}")
        steady_from = model_runs[0][1]
        return [OpTime(name=e["name"].removesuffix("_kernel_time"), op_type=str(e.get("args", {}).get("op_name", "?")),
                       microseconds=float(e["dur"]))
                for e in events
                if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and e["ts"] >= steady_from]

    def prepare(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def run(self, prepared: Any) -> Any:
        return self.session.run(None, prepared)

    def logits(self, prepared: Any) -> np.ndarray:
        return np.asarray(self.session.run(None, prepared)[0], dtype=np.float32)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    package = "onnxruntime"
    artifact_format = "onnx"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    module, extra = "onnxruntime", "onnx"
    profiler = "session profiling"
    standalone_adapter = Path(__file__).with_name("standalone.py")

    def unavailable_reason(self, device: str) -> str | None:
        if reason := super().unavailable_reason(device):
            return reason
        if device == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "cuda: onnxruntime has no CUDA execution provider here (needs onnxruntime-gpu and a GPU)"
        return None

    def load(self, request: LoadRequest) -> Runner:
        import onnxruntime as ort

        assert request.artifact is not None
        providers = ["CPUExecutionProvider"]
        if request.device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")

        def make_session(profile: bool = False, prefix: str = "") -> Any:
            """A session with the timed settings; with ``profile``, writing an op profile under ``prefix``."""
            options = ort.SessionOptions()
            options.intra_op_num_threads = request.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if profile:
                options.enable_profiling, options.profile_file_prefix = True, prefix
            return ort.InferenceSession(str(request.artifact), options, providers=providers)

        try:
            session = make_session()
        except Exception as error:  # noqa: BLE001
            raise BackendError(f"onnxruntime cannot load {request.artifact}: {str(error).splitlines()[0][:200]}") from None
        (source,) = session.get_inputs()
        shape = source.shape
        expected = [request.batch, 3, *request.img_size]
        if len(shape) != 4 or any(isinstance(s, int) and s != e for s, e in zip(shape, expected)):
            raise BackendError(
                f"artifact {request.artifact.name} takes input {shape}, not {expected} "
                f"(batch {request.batch}, size {request.img_size[0]}x{request.img_size[1]}); "
                "re-export it (e.g. --dynamic-batch) or change --batch/--img-size"
            )
        return OrtRunner(session, make_session)
