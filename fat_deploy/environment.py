"""The host and tool versions every manifest and measurement carries."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from functools import cache
from importlib import metadata

TOOL_PACKAGES = (
    "fat-deploy", "torch", "timm", "numpy", "onnx", "onnxruntime", "onnxsim", "onnxscript",
    "coremltools", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
)


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_versions(names: tuple[str, ...] = TOOL_PACKAGES) -> dict[str, str]:
    return {name: version for name in names if (version := package_version(name)) is not None}


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, object]:
    """CPU model, cores, OS and Python of this machine."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (Python and native libraries) to stderr meanwhile.

    Converters print progress and logs from C++; this keeps stdout clean for ``--json``.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (e.g. some test runners): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
