"""OpenVINO on this host's CPU: a compiled model with the timed thread count, fp32 arithmetic asked for explicitly.

OpenVINO's CPU plugin picks its own inference precision when none is given: bfloat16 on CPUs with AVX512_BF16
or AMX (measured here, AMD EPYC family 26: FAT-B0's logits then differ from PyTorch by 1.5e-2 instead of 1e-6),
float32 elsewhere; an IR file cannot carry the choice (its ``runtime_options`` are not applied to the CPU
plugin's precision). So every load here sets ``INFERENCE_PRECISION_HINT`` to ``f32`` and the bundle's snippet
does the same (https://docs.openvino.ai/2025/openvino-workflow/running-inference/optimize-inference/precision-control.html).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.contract.session import Backend, BackendError, LoadRequest, OpTime, Runner
from fat_deploy.runtimes.openvino.standalone import MODEL_XML, compile_settings, openvino_module


def openvino_reason(error: Exception) -> str:
    """OpenVINO's message without its ``Exception from <source>:<line>:`` prefixes, on one line."""
    text = re.sub(r"(Exception from|Check '[^']*' failed at) \S+:\d+:?", " ", str(error))
    return " ".join(text.split())[:200] or type(error).__name__


class OpenVinoRunner(Runner):
    def __init__(self, core: Any, model: Any, threads: int, settings: dict[str, Any] | None = None) -> None:
        """``model`` compiled for the CPU with :func:`compile_settings` (or exactly ``settings``, for comparisons)."""
        self.core, self.model, self.threads = core, model, threads
        self.compiled = core.compile_model(model, "CPU", compile_settings(threads) if settings is None else settings)
        self.request = self.compiled.create_infer_request()

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch, dtype=np.float32)

    def run(self, prepared: Any) -> Any:
        return self.request.infer({0: prepared}, share_inputs=True)  # the prepared array as it is: no copy per run

    def logits(self, prepared: Any) -> np.ndarray:
        return np.array(self.request.infer({0: prepared}, share_inputs=True)[0], dtype=np.float32)

    def op_times(self, prepared: Any, runs: int, trace: Path | None = None) -> list[OpTime]:
        """OpenVINO's per-layer performance counts (``PERF_COUNT``), on a separately compiled model; the first run
        (one-time work) is left out. Layers the plugin fused away report no time and are skipped."""
        request = self.core.compile_model(self.model, "CPU", compile_settings(self.threads, profile=True)) \
            .create_infer_request()
        request.infer({0: prepared})
        totals: dict[tuple[str, str], float] = {}
        for _ in range(runs):
            request.infer({0: prepared})
            for info in request.get_profiling_info():
                if info.status == info.Status.EXECUTED:
                    key = (info.node_name, info.node_type)
                    totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e6
        return [OpTime(name=name, op_type=kind, microseconds=us, count=runs) for (name, kind), us in totals.items()]


class OpenVinoBackend(Backend):
    name = "openvino"
    package = "openvino"
    artifact_format = "openvino"
    devices = ("cpu",)
    device_notes = {"cuda": "cuda: OpenVINO runs on Intel CPUs, GPUs and NPUs, not on CUDA"}
    module, extra = "openvino", "openvino"
    profiler = "per-layer performance counts"
    standalone_adapter = Path(__file__).with_name("standalone.py")

    def load(self, request: LoadRequest) -> Runner:
        assert request.artifact is not None
        xml = Path(request.artifact) / MODEL_XML
        core = openvino_module().Core()
        try:
            model = core.read_model(str(xml))
        except Exception as error:  # noqa: BLE001 - a damaged IR is the user's file
            raise BackendError(f"OpenVINO cannot read {xml}: {openvino_reason(error)}") from None
        shape = [int(d.get_length()) if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        expected = [request.batch, 3, *request.img_size]
        if shape != expected:
            raise BackendError(f"artifact {Path(request.artifact).name} takes input {shape}, not {expected}; "
                               "re-export it or change --batch/--img-size")
        return OpenVinoRunner(core, model, request.threads)
