"""OpenVINO's adapter for a process of its own (fat_deploy.common.probe), the compile settings every OpenVINO
load here uses (the session imports them from here) and the one way this package imports openvino
(:func:`openvino_module`). Imports numpy, and openvino only when loading."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RUNTIME = "openvino"
MODEL_XML, MODEL_BIN = "model.xml", "model.bin"  # the IR pair inside an artifact folder
PRECISION_HINT = "f32"
TELEMETRY_MODULE = "openvino_telemetry"


def openvino_module() -> Any:
    """``openvino``, imported with openvino-telemetry marked absent in this process.

    OpenVINO's converter and NNCF send usage events to Google Analytics through openvino-telemetry unless the user
    opted out (a consent file under ``~/intel``) or ``CI=true`` is set: it is opt-out. ``openvino.convert_model`` also
    writes a client id and counters under ``~/intel``, and each event forks a process that waits up to 3 s for the
    network (https://github.com/openvinotoolkit/telemetry, ``backend_ga4.py``): offline, that was about 12 s of a
    ``fat-export --format all``. Both tools fall back to their no-op stubs when the package cannot be imported, so
    fat-deploy marks it absent before anything imports openvino: it sends nothing and writes nothing in the home
    folder. A process that imported openvino-telemetry itself earlier keeps it and its own consent setting."""
    if TELEMETRY_MODULE not in sys.modules:
        sys.modules[TELEMETRY_MODULE] = None  # type: ignore[assignment]  # import raises ModuleNotFoundError
    import openvino

    return openvino


def compile_settings(threads: int, profile: bool = False) -> dict[str, Any]:
    """What every compiled model here gets: one stream, ``threads`` threads, f32 arithmetic, latency mode."""
    settings: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                "INFERENCE_PRECISION_HINT": PRECISION_HINT, "PERFORMANCE_HINT": "LATENCY"}
    if profile:
        settings["PERF_COUNT"] = True
    return settings


def every_output(folder: Path, image: np.ndarray) -> list[np.ndarray]:
    """Every op output the CPU plugin computes for one NCHW float32 image: the IR read with each op's outputs added
    as model outputs (f32, one thread)."""
    core = openvino_module().Core()
    model = core.read_model(str(folder / MODEL_XML))
    skipped = {"Constant", "Parameter", "Result"}
    model.add_outputs([port for op in model.get_ordered_ops() if op.get_type_name() not in skipped
                       for port in op.outputs()])
    request = core.compile_model(model, "CPU", compile_settings(1)).create_infer_request()
    results = request.infer({0: np.ascontiguousarray(image.reshape(1, *image.shape[-3:]), np.float32)})
    return [np.asarray(value, dtype=np.float32) for value in results.values()
            if np.asarray(value).dtype.kind == "f"]


def version() -> str:
    return str(openvino_module().get_version())


def import_runtime() -> None:
    openvino_module()


def load(artifact: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    core = openvino_module().Core()
    model = core.read_model(str(Path(artifact) / MODEL_XML))
    request = core.compile_model(model, "CPU", compile_settings(threads)).create_infer_request()

    def run(batch: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: np.ascontiguousarray(batch, np.float32)}, share_inputs=True)[0], np.float32)

    run.batch = int(model.inputs[0].get_partial_shape()[0].get_length())  # type: ignore[attr-defined]
    return run
