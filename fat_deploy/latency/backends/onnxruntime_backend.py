"""onnxruntime: CPU execution provider with intra/inter-op threads; CUDA EP where installed."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from fat_deploy.latency.backends.base import Backend, BackendError, LoadRequest, Runner


class OrtRunner(Runner):
    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def prepare(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def run(self, prepared: Any) -> Any:
        return self.session.run(None, prepared)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    artifact_format = "onnx"
    devices = ("cpu", "cuda")

    def unavailable_reason(self, device: str) -> str | None:
        if reason := super().unavailable_reason(device):
            return reason
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime: not installed (pip install 'fat-deploy[onnx]')"
        if device == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "cuda: onnxruntime has no CUDA execution provider here (needs onnxruntime-gpu and a GPU)"
        return None

    def load(self, request: LoadRequest) -> Runner:
        import onnxruntime as ort

        assert request.artifact is not None
        options = ort.SessionOptions()
        options.intra_op_num_threads = request.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if request.device == "cuda" else ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(request.artifact), options, providers=providers)
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
        return OrtRunner(session)

    def version(self) -> str | None:
        import onnxruntime as ort

        return ort.__version__
