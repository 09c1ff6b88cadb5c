"""One registry of export formats. Each format says what it supports and why it cannot run."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch.nn as nn

from fat_deploy.errors import FatDeployError
from fat_deploy.models.registry import ModelSpec, output_classes

# Every precision / quantization mode fat-deploy knows, named explicitly (never one "int8").
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-weights", "int8-static", "w8a8",
              "palettize-4", "palettize-6", "palettize-8", "int4-block")
QUANTIZED = frozenset({"int8-dynamic", "int8-weights", "int8-static", "w8a8",
                       "palettize-4", "palettize-6", "palettize-8", "int4-block"})


class UnsupportedOptionError(FatDeployError):
    """An option, precision or format the request cannot have."""


class RuntimeUnavailable(Exception):
    """The format's runtime cannot run on this host (the message says why)."""


@dataclass
class ExportRequest:
    """Everything a format needs to convert and check one artifact."""

    model_name: str
    spec: ModelSpec
    reference: nn.Module  # the faithful fp32 model, eval mode
    model: nn.Module  # what is converted (deploy form unless turned off)
    img_size: tuple[int, int]
    precision: str = "fp32"
    batch: int = 1
    dynamic_batch: bool = False
    nhwc: bool = False
    labels: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # A PyTorch model computing what the artifact computes (e.g. fake-quantized W8A8), used to measure the
    # cost where the artifact's runtime cannot run on this host.
    simulation: nn.Module | None = None

    @property
    def num_classes(self) -> int:
        return output_classes(self.reference)


class ExportFormat(ABC):
    """A target format: converts a model into a file and runs that file where it can."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    runtime: ClassVar[str]
    converter_modules: ClassVar[tuple[str, ...]]  # importable names the converter needs
    extra: ClassVar[str]  # pip extra that installs them
    supported_options: ClassVar[frozenset[str]] = frozenset()

    def unavailable_reason(self) -> str | None:
        """Why this format cannot be exported here (a missing package), or None."""
        missing = [m for m in self.converter_modules if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{self.name} export needs {', '.join(missing)}: "
                    f"pip install 'fat-deploy[{self.extra}]'")
        return None

    def artifact_name(self, model_name: str, precision: str, options: dict[str, Any]) -> str:
        """``<model>_<format>_<precision><suffix>`` (see docs/DESIGN.md)."""
        return f"{model_name}_{self.name}_{precision}{self.suffix}"

    @abstractmethod
    def convert(self, request: ExportRequest, path: Path) -> dict[str, Any]:
        """Write the artifact to ``path``; return format details for the manifest.

        Lines under ``summary_notes`` are also shown in the fat-export summary.
        """

    def run(self, path: Path, request: ExportRequest, inputs: np.ndarray, batch: int) -> np.ndarray:
        """Logits of the artifact for NCHW float32 ``inputs``; RuntimeUnavailable if it cannot run here.

        Runs the file with the same runner the latency harness times (one thread), batch by batch.
        """
        from fat_deploy.exporters.calibration import batches, unbatch
        from fat_deploy.latency.backends import LoadRequest, backend_for_format

        backend = backend_for_format(self.name)
        if reason := backend.unavailable_reason("cpu"):
            raise RuntimeUnavailable(reason)
        runner = backend.load(LoadRequest(model_name=request.model_name, model=None, artifact=path, batch=batch,
                                          img_size=request.img_size, threads=1))
        return unbatch([runner.logits(runner.prepare(group)) for group in batches(inputs, batch)], len(inputs))

    def inspect(self, path: Path, request: ExportRequest) -> list[str]:
        """Structural problems found without running the artifact (empty when fine)."""
        return []

    @abstractmethod
    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        """Input/output names, shapes, dtypes and layout, for the manifest."""


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    FORMATS[fmt.name] = fmt
    return fmt


LISTING_ORDER = ("onnx", "coreml", "tflite")


def _ensure_loaded() -> None:
    from fat_deploy.exporters import coreml, onnx, tflite  # noqa: F401 - registers the formats


def get_format(name: str) -> ExportFormat:
    _ensure_loaded()
    if name not in FORMATS:
        raise UnsupportedOptionError(
            f"unknown format {name!r}: choose from {', '.join(list_formats())} or all"
        )
    return FORMATS[name]


def list_formats() -> list[str]:
    _ensure_loaded()
    return sorted(FORMATS, key=lambda name: (LISTING_ORDER + (name,)).index(name))
