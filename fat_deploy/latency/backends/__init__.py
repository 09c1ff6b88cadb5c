"""One registry of runtime backends."""

from __future__ import annotations

from fat_deploy.latency.backends.base import Backend, BackendError, LoadRequest, Runner
from fat_deploy.latency.backends.coreml_backend import CoreMLBackend
from fat_deploy.latency.backends.onnxruntime_backend import OnnxRuntimeBackend
from fat_deploy.latency.backends.tflite_backend import TFLiteBackend
from fat_deploy.latency.backends.torch_backend import TorchBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (TorchBackend(), OnnxRuntimeBackend(), TFLiteBackend(), CoreMLBackend())}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: choose from {', '.join(BACKENDS)}")
    return BACKENDS[name]


__all__ = ["BACKENDS", "Backend", "BackendError", "LoadRequest", "Runner", "get_backend"]
