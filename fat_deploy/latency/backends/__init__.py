"""One registry of runtime backends."""

from __future__ import annotations

from fat_deploy.latency.backends.base import Backend, BackendError, LoadRequest, Runner
from fat_deploy.latency.backends.coreml_backend import CoreMLBackend
from fat_deploy.latency.backends.onnxruntime_backend import OnnxRuntimeBackend
from fat_deploy.latency.backends.tflite_backend import TFLiteBackend
from fat_deploy.latency.backends.torch_backend import TorchBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (TorchBackend(), OnnxRuntimeBackend(), TFLiteBackend(), CoreMLBackend())}


KNOWN_DEVICES: tuple[str, ...] = tuple(dict.fromkeys(d for backend in BACKENDS.values() for d in backend.devices))


def check_device(device: str) -> str:
    """An unknown device is an error; a known one that a backend lacks stays a row with its reason."""
    if not isinstance(device, str) or device not in KNOWN_DEVICES:
        raise BackendError(f"unknown device {device!r}: choose from {', '.join(KNOWN_DEVICES)}")
    return device


def backend_for_format(fmt: str) -> Backend:
    """The backend that runs artifacts of export format ``fmt`` (verification and timing share it)."""
    for backend in BACKENDS.values():
        if backend.artifact_format == fmt:
            return backend
    raise BackendError(f"no backend runs {fmt} artifacts")


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: choose from {', '.join(BACKENDS)}")
    return BACKENDS[name]


__all__ = ["BACKENDS", "backend_for_format", "KNOWN_DEVICES", "check_device", "Backend", "BackendError", "LoadRequest", "Runner", "get_backend"]
