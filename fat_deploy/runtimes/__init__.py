"""Every runtime fat-deploy supports, one package each (converter, quantization, session, checks, versions).

Adding a runtime is one new package under ``fat_deploy/runtimes/`` that defines ``RUNTIME`` and one line in
:data:`REGISTERED`. The export pipeline, the latency harness, the environment record and the CLIs know runtimes
only through this registry.
"""

from __future__ import annotations

import importlib
from functools import cache

from fat_deploy.runtimes.base import Runtime
from fat_deploy.runtimes.session import Backend, BackendError, LoadRequest, Runner

REGISTERED = (  # listing order of formats and backends
    "torch",
    "onnx",
    "coreml",
    "tflite",
    "executorch",
    "ort_mobile",
)


@cache
def runtimes() -> tuple[Runtime, ...]:
    """The registered runtimes, imported on first use (their converters import lazily)."""
    return tuple(importlib.import_module(f"{__name__}.{name}").RUNTIME for name in REGISTERED)


def backends() -> dict[str, Backend]:
    return {runtime.backend.name: runtime.backend for runtime in runtimes()}


def runtime_packages() -> tuple[str, ...]:
    """Every distribution a registered runtime records, in registration order."""
    return tuple(dict.fromkeys(package for runtime in runtimes() for package in runtime.packages))


def known_devices() -> tuple[str, ...]:
    return tuple(dict.fromkeys(d for backend in backends().values() for d in backend.devices))


def check_device(device: str) -> str:
    """An unknown device is an error; a known one that a backend lacks stays a row with its reason."""
    if not isinstance(device, str) or device not in known_devices():
        raise BackendError(f"unknown device {device!r}: choose from {', '.join(known_devices())}")
    return device


def backend_for_format(fmt: str) -> Backend:
    """The backend that runs artifacts of export format ``fmt`` (verification and timing share it)."""
    for runtime in runtimes():
        if runtime.export_format is not None and runtime.export_format.name == fmt:
            return runtime.backend
    raise BackendError(f"no backend runs {fmt} artifacts")


def get_backend(name: str) -> Backend:
    if name not in backends():
        raise BackendError(f"unknown backend {name!r}: choose from {', '.join(backends())}")
    return backends()[name]


__all__ = ["REGISTERED", "Runtime", "runtimes", "backends", "runtime_packages", "known_devices", "check_device",
           "backend_for_format", "get_backend", "Backend", "BackendError", "LoadRequest", "Runner"]
