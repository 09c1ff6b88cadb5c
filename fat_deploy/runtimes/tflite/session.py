"""LiteRT / TFLite interpreter (ai-edge-litert) with XNNPACK and num_threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.contract.session import Backend, BackendError, LoadRequest, OpTime, ProfileUnavailable, Runner
from fat_deploy.runtimes.tflite.tensors import from_output_dtype, to_input_dtype


class TFLiteRunner(Runner):
    def __init__(self, interpreter: Any, nhwc: bool) -> None:
        self.interpreter, self.nhwc = interpreter, nhwc
        self.input_detail = interpreter.get_input_details()[0]
        self.input_index = self.input_detail["index"]

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        data = batch.transpose(0, 2, 3, 1) if self.nhwc else batch
        return to_input_dtype(np.ascontiguousarray(data), self.input_detail)

    def run(self, prepared: Any) -> Any:
        self.interpreter.set_tensor(self.input_index, prepared)
        self.interpreter.invoke()

    def logits(self, prepared: Any) -> np.ndarray:
        self.run(prepared)
        (target,) = self.interpreter.get_output_details()
        return from_output_dtype(self.interpreter.get_tensor(target["index"]), target).astype(np.float32)

    def op_times(self, prepared: Any, runs: int, trace: Path | None = None) -> list[OpTime]:
        raise ProfileUnavailable("ai-edge-litert's Python Interpreter exposes no per-op timings; LiteRT's "
                                 "benchmark_model tool (--enable_op_profiling=true) gives them on the device")


class TFLiteBackend(Backend):
    name = "tflite"
    package = "ai-edge-litert"
    artifact_format = "tflite"
    module, extra = "ai_edge_litert", "tflite"
    device_notes = {"cuda": "cuda: the LiteRT interpreter runs on CPU here (GPU delegates are mobile-only)"}
    standalone_adapter = Path(__file__).with_name("standalone.py")

    def load(self, request: LoadRequest) -> Runner:
        from ai_edge_litert.interpreter import Interpreter

        assert request.artifact is not None
        try:
            interpreter = Interpreter(str(request.artifact), num_threads=request.threads)
            interpreter.allocate_tensors()
        except Exception as error:  # noqa: BLE001
            raise BackendError(f"LiteRT cannot load {request.artifact}: {str(error).splitlines()[0][:200]}") from None
        shape = list(interpreter.get_input_details()[0]["shape"])
        height, width = request.img_size
        nchw, nhwc = [request.batch, 3, height, width], [request.batch, height, width, 3]
        if shape not in (nchw, nhwc):
            raise BackendError(
                f"artifact {request.artifact.name} takes input {shape}, not {nchw} or {nhwc}; "
                "re-export it or change --batch/--img-size"
            )
        return TFLiteRunner(interpreter, nhwc=shape == nhwc and shape != nchw)
