"""What every runtime backend offers the harness: availability with a reason, load, run."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch.nn as nn

from fat_deploy.environment import package_version
from fat_deploy.errors import FatDeployError
from fat_deploy.precision import Precision


class BackendError(FatDeployError):
    """A backend request that cannot be honoured (bad threads, mismatched artifact, ...)."""


@dataclass
class LoadRequest:
    """What to load: a PyTorch model, or an artifact file exported from it."""

    model_name: str
    model: nn.Module | None
    artifact: Path | None
    batch: int
    img_size: tuple[int, int]
    threads: int
    device: str = "cpu"
    precision: Precision = Precision.FP32
    channels_last: bool = False


@dataclass(frozen=True)
class OpTime:
    """Time one op (node) took over all profiled runs."""

    name: str
    op_type: str
    microseconds: float
    count: int = 1  # invocations the time covers (profilers that aggregate report several)


class ProfileUnavailable(Exception):
    """The runtime exposes no per-op timings here (the message says why)."""


class Runner(ABC):
    """A loaded model that can be invoked on a prepared input."""

    def logits(self, prepared: Any) -> np.ndarray:
        """One invocation's output as float32 logits (what verification compares with PyTorch)."""
        raise NotImplementedError(f"{type(self).__name__} does not return outputs")

    def op_times(self, prepared: Any, runs: int, trace: Path | None = None) -> list[OpTime]:
        """Per-op times over ``runs`` invocations, from the runtime's own profiler (never timed by us); where the
        profiler writes a Chrome/Perfetto trace, it is also written to ``trace``."""
        raise ProfileUnavailable("this runtime exposes no per-op profile")

    @abstractmethod
    def prepare(self, batch: np.ndarray) -> Any:
        """Turn an NCHW float32 batch into what :meth:`run` takes (done once, outside timing)."""

    @abstractmethod
    def run(self, prepared: Any) -> Any:
        """One invocation; returns when the result is computed (synchronised on GPUs)."""

    def peak_device_memory_mb(self) -> float | None:
        return None


class Backend(ABC):
    """A runtime: torch, onnxruntime, tflite, coreml."""

    name: ClassVar[str]
    artifact_format: ClassVar[str | None] = None  # export format it runs; None: runs the nn.Module
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    package: ClassVar[str] = ""  # the distribution that runs it (its version goes into every record)
    module: ClassVar[str | None] = None  # importable name it needs, if any
    extra: ClassVar[str] = ""  # pip extra that installs it
    device_notes: ClassVar[dict[str, str]] = {}  # why a device it lacks is unavailable, where there is more to say
    profiler: ClassVar[str | None] = None  # the runtime's own per-op profiler that Runner.op_times reads, if any
    # The runtime's adapter for a process of its own (fat_deploy.common.probe): a module importing numpy and the
    # runtime only, for fresh-process memory and cold start, and for the ARM64 emulation root. None: none.
    standalone_adapter: ClassVar[Path | None] = None

    def unavailable_reason(self, device: str) -> str | None:
        """Why this backend cannot run on ``device`` here, or None."""
        if device in self.device_notes:
            return self.device_notes[device]
        if device not in self.devices:
            return f"{self.name}: device {device} not supported (supports {', '.join(self.devices)})"
        if self.module and importlib.util.find_spec(self.module) is None:
            return f"{self.name}: {self.package} not installed (pip install 'fat-deploy[{self.extra}]')"
        return None

    @abstractmethod
    def load(self, request: LoadRequest) -> Runner:
        """Create the session/interpreter (timed by the harness as init time)."""

    def version(self) -> str | None:
        return package_version(self.package)
