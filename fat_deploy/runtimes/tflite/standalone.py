"""LiteRT's adapter for a process of its own (fat_deploy.common.probe): imports numpy and ai_edge_litert only, so
that it runs in the ARM64 emulation root and in fat-latency's fresh-process measurement. NHWC files get their NCHW
inputs transposed; integer inputs and outputs are (de)quantized with the tensors' scale and zero point."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version as distribution_version

import numpy as np
from ai_edge_litert.interpreter import Interpreter

RUNTIME = "ai-edge-litert"


def version() -> str:
    return distribution_version(RUNTIME)


def import_runtime() -> None:
    """ai_edge_litert is imported with this module."""


def load(artifact: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    interpreter = Interpreter(artifact, num_threads=threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = list(source["shape"])
    nhwc = shape[-1] == 3 and shape[1] != 3

    def run(batch: np.ndarray) -> np.ndarray:
        values = batch.transpose(0, 2, 3, 1) if nhwc else batch
        if source["dtype"] != np.float32:
            scale, zero_point = source["quantization"]
            info = np.iinfo(source["dtype"])
            values = np.clip(np.round(values / scale + zero_point), info.min, info.max)
        interpreter.set_tensor(source["index"], np.ascontiguousarray(values.astype(source["dtype"])))
        interpreter.invoke()
        output: np.ndarray = interpreter.get_tensor(target["index"]).astype(np.float32)
        if target["dtype"] != np.float32:
            scale, zero_point = target["quantization"]
            output = (output - zero_point) * scale
        return output

    run.batch = shape[0]  # type: ignore[attr-defined]
    return run
