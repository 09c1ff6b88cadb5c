"""Core ML through coremltools' predict (macOS only), with compute units CPU_ONLY/CPU_AND_GPU/ALL."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from fat_deploy.contract.session import Backend, LoadRequest, Runner


class CoreMLRunner(Runner):  # pragma: no cover - macOS only
    def __init__(self, model: Any, input_name: str) -> None:
        self.model, self.input_name = model, input_name

    def prepare(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {self.input_name: batch}

    def run(self, prepared: Any) -> Any:
        return self.model.predict(prepared)


class CoreMLBackend(Backend):
    name = "coreml"
    package = "coremltools"
    artifact_format = "coreml"
    devices = ("cpu", "gpu", "all")

    def unavailable_reason(self, device: str) -> str | None:
        if platform.system() != "Darwin":
            return "coreml: prediction needs macOS"
        return super().unavailable_reason(device)

    def load(self, request: LoadRequest) -> Runner:  # pragma: no cover - macOS only
        import coremltools as ct

        units = {"cpu": ct.ComputeUnit.CPU_ONLY, "gpu": ct.ComputeUnit.CPU_AND_GPU, "all": ct.ComputeUnit.ALL}
        model = ct.models.MLModel(str(request.artifact), compute_units=units[request.device])
        return CoreMLRunner(model, model.get_spec().description.input[0].name)
