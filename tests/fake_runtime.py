"""A runtime that exists only in tests: ``.npz`` files of a model's weights, run by PyTorch.

It implements the whole contract (export format, options, backend, runner, coverage, bundle guide) in a few lines
and converts in milliseconds, so the pipeline, placement, manifests, ``--bundle``, option flags and the latency
harness are tested without a converter. Registered by the ``fake_runtime`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.contract.coverage import Accelerator, Coverage
from fat_deploy.contract.formats import (
    Conversion,
    Explanation,
    ExportFormat,
    ExportRequest,
    UnsupportedOptionError,
    explain_option,
    keep_float_option,
    option,
)
from fat_deploy.contract.runtime import Runtime
from fat_deploy.contract.session import Backend, BackendError, LoadRequest, Runner
from fat_deploy.exporters.api import Artifact
from fat_deploy.exporters.jobs import ExportJob
from fat_deploy.models import create_model, to_deploy

MODEL_KEY = "__model__"
# int8-weights in the fake runtime: these layers' weights rounded per tensor to so many bits (stored dequantized).
# The head's single bit stands for a layer whose range quantization got badly wrong: it costs top-1.
FAKE_QUANTIZED_BITS = {"head": 1, "layers.3.blocks.1.ffn.fc2": 8}


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 1:
        return weight.sign() * weight.abs().mean()
    scale = weight.abs().max() / (2 ** (bits - 1) - 1)
    return torch.round(weight / scale) * scale


class NpzRunner(Runner):
    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(batch)

    @torch.no_grad()
    def run(self, prepared: Any) -> Any:
        return self.model(prepared)

    def logits(self, prepared: Any) -> np.ndarray:
        out: np.ndarray = self.run(prepared).numpy()
        return out


class NpzBackend(Backend):
    """Rebuilds the model the file names in its deploy form and loads the file's weights into it."""

    name = "fake-npz"
    package = "torch"
    artifact_format = "npz"

    def load(self, request: LoadRequest) -> Runner:
        if request.artifact is None:
            raise BackendError("the fake backend runs .npz files")
        with np.load(request.artifact) as stored:
            name, classes = str(stored[MODEL_KEY][0]), int(stored[MODEL_KEY][1])
            weights = {key: torch.from_numpy(stored[key]) for key in stored.files if key != MODEL_KEY}
        model = to_deploy(create_model(name, num_classes=classes))
        model.load_state_dict(weights)
        torch.set_num_threads(request.threads)
        return NpzRunner(model.eval())


@dataclass(frozen=True)
class NpzOptions:
    compress: bool = option("--npz-compress", "npz: zip-compress the weights", default=False)
    note: str | None = option("--npz-note", "npz: a note stored in the manifest (\"rank-backwards\": --explain "
                              "ranks the layers best first)", metavar="TEXT")
    keep_float: list[str] | None = keep_float_option()
    explain: bool = explain_option()


class NpzFormat(ExportFormat):
    name = "npz"
    backend = NpzBackend()
    suffix = ".npz"
    precisions = ("fp32", "fp16", "int8-weights")
    runtime = "PyTorch (fake runtime, tests only)"
    converter_modules = ("numpy",)
    extra = "dev"
    Options = NpzOptions
    artifact_tags = {"compress": "z"}
    bundle_platform = "web"
    float16_on_devices = "the tests' imaginary phone GPUs"

    def check_options(self, precision: str, options: dict[str, Any]) -> None:
        super().check_options(precision, options)
        if options.get("note") == "refuse":
            raise UnsupportedOptionError("--npz-note refuse: refused, as asked")

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        if request.model_name != request.spec.name:
            raise UnsupportedOptionError("the fake runtime rebuilds registered models only")
        half = request.precision == "fp16"
        arrays = {key: (value.half() if half and value.is_floating_point() else value).detach().numpy()
                  for key, value in request.model.state_dict().items()}
        arrays[MODEL_KEY] = np.array([request.model_name, str(request.num_classes)])
        errors = self._quantize(arrays, request) if request.precision == "int8-weights" else {}
        with path.open("wb") as handle:
            (np.savez_compressed if request.options.get("compress") else np.savez)(handle, **arrays)
        conversion = Conversion(details={"arrays": len(arrays) - 1, "note": request.options.get("note")},
                                notes=["fake runtime: weights stored as .npz"])
        if request.options.get("explain"):
            ranking = sorted(errors, key=errors.__getitem__, reverse=request.options.get("note") != "rank-backwards")
            conversion.explanation = Explanation(
                images=[], method="relative weight error", ranking=ranking,
                worst_layers=[{"name": name, "relative_error": errors[name]} for name in ranking])
        return conversion

    @staticmethod
    def _quantize(arrays: dict[str, np.ndarray], request: ExportRequest) -> dict[str, float]:
        """FAKE_QUANTIZED_BITS applied to the weights of the layers --keep-float does not name; each one's relative
        weight error."""
        kept = request.options.get("keep_float") or []
        errors = {}
        for layer, bits in FAKE_QUANTIZED_BITS.items():
            if any(pattern in layer for pattern in kept):
                continue
            weight = torch.from_numpy(arrays[f"{layer}.weight"])
            quantized = fake_quantize(weight, bits)
            arrays[f"{layer}.weight"] = quantized.numpy()
            errors[layer] = float((quantized - weight).norm() / weight.norm())
        return errors

    def coverage(self, path: Path) -> Coverage:
        with np.load(path) as stored:
            arrays = len(stored.files) - 1
        return Coverage(format=self.name, ops={"array": arrays}, layout_transposes=0,
                        accelerators=[Accelerator(name="PyTorch", takes=arrays, total=arrays, partitions=1)])

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return f"## {file_name}\n\nLoad it with numpy; rebuild `{manifest['model']}` and load the arrays."

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        return {"input": {"name": "input", "shape": [request.batch, 3, *request.img_size], "dtype": "float32",
                          "layout": "NCHW"},
                "output": {"name": "logits", "shape": [request.batch, request.num_classes], "dtype": "float32"}}


@dataclass(frozen=True)
class DyingJob(ExportJob):
    """An export whose worker process dies at once (as one killed by the kernel would)."""

    def run(self, on_stage: Callable[[str], None]) -> Artifact:
        os._exit(9)


FAKE_RUNTIME = Runtime(backend=NpzFormat.backend, export_format=NpzFormat(), packages=("numpy",))
