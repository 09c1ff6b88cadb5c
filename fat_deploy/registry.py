"""Every runtime fat-deploy supports, one package each under ``fat_deploy/runtimes/``.

Adding a runtime is one new package that defines ``RUNTIME`` (a :class:`~fat_deploy.contract.runtime.Runtime`)
and one line in :data:`REGISTERED`. The export pipeline, the latency harness, the environment record and the CLIs
reach runtimes only through this module.
"""

from __future__ import annotations

from fat_deploy.contract.formats import ExportFormat, UnsupportedOptionError
from fat_deploy.contract.runtime import Runtime
from fat_deploy.contract.session import Backend, BackendError
from fat_deploy.environment import CORE_PACKAGES, tool_versions
from fat_deploy.runtimes import coreml, executorch, mnn, ncnn, onnx, openvino, ort_mobile, tflite, torch

REGISTERED: tuple[Runtime, ...] = (  # listing order of formats and backends
    torch.RUNTIME,
    onnx.RUNTIME,
    coreml.RUNTIME,
    tflite.RUNTIME,
    executorch.RUNTIME,
    ort_mobile.RUNTIME,
    openvino.RUNTIME,
    mnn.RUNTIME,
    ncnn.RUNTIME,
)

_extra: list[Runtime] = []  # runtimes registered at run time (tests' fake runtime), see :func:`register`


def runtimes() -> tuple[Runtime, ...]:
    """The registered runtimes, in listing order."""
    return REGISTERED + tuple(_extra)


def register(runtime: Runtime) -> None:
    """Add a runtime at run time (a plug-in, or the tests' fake runtime); names must stay unique."""
    if runtime.backend.name in backends() or (
            runtime.export_format is not None and runtime.export_format.name in formats()):
        raise ValueError(f"a runtime named {runtime.backend.name!r} is already registered")
    _extra.append(runtime)


def unregister(runtime: Runtime) -> None:
    """Remove a runtime added by :func:`register`."""
    _extra.remove(runtime)


def backends() -> dict[str, Backend]:
    return {runtime.backend.name: runtime.backend for runtime in runtimes()}


def formats() -> dict[str, ExportFormat]:
    """Every registered runtime's export format, in registration order."""
    return {r.export_format.name: r.export_format for r in runtimes() if r.export_format is not None}


def runtime_packages() -> tuple[str, ...]:
    """Every distribution a registered runtime records, in registration order."""
    return tuple(dict.fromkeys(package for runtime in runtimes() for package in runtime.packages))


def recorded_versions() -> dict[str, str]:
    """Versions of fat-deploy's core packages and of every registered runtime's (what manifests and timings carry)."""
    return tool_versions(tuple(dict.fromkeys(CORE_PACKAGES + runtime_packages())))


def known_devices() -> tuple[str, ...]:
    return tuple(dict.fromkeys(d for backend in backends().values() for d in backend.devices))


def check_device(device: str) -> str:
    """An unknown device is an error; a known one that a backend lacks stays a row with its reason."""
    if not isinstance(device, str) or device not in known_devices():
        raise BackendError(f"unknown device {device!r}: choose from {', '.join(known_devices())}")
    return device


def backend_for_format(fmt: str) -> Backend:
    """The backend that runs artifacts of export format ``fmt`` (verification and timing share it)."""
    if fmt not in formats():
        raise BackendError(f"no backend runs {fmt} artifacts")
    return formats()[fmt].backend


def get_backend(name: str) -> Backend:
    if name not in backends():
        raise BackendError(f"unknown backend {name!r}: choose from {', '.join(backends())}")
    return backends()[name]


def get_format(name: str) -> ExportFormat:
    if name not in formats():
        raise UnsupportedOptionError(f"unknown format {name!r}: choose from {', '.join(list_formats())}")
    return formats()[name]


def list_formats() -> list[str]:
    return list(formats())
