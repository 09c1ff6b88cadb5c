"""The host and tool versions every manifest and measurement carries."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

from fat_deploy.errors import InputSizeError

CORE_PACKAGES = ("fat-deploy", "torch", "timm", "numpy")


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    return {name: version for name in names if (version := package_version(name)) is not None}


def cache_root() -> Path:
    """fat-deploy's cache folder (exports the harness times, the test bed, the ARM64 root):
    ``$XDG_CACHE_HOME/fat-deploy``, ``~/.cache/fat-deploy`` when that is unset or empty."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fat-deploy"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def available_memory_bytes() -> int | None:
    """Memory the OS can still give this process (Linux ``MemAvailable``; elsewhere the physical total), or None."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


MAX_SIDE, MAX_BATCH = 4096, 1024  # beyond any phone model's input, whatever the host
# Peak memory per input pixel while exporting and verifying: FAT-B0's deploy form alone peaks at 270-350 bytes per
# pixel in an fp32 forward pass (measured: batch 1-4, 224-448 px); export, conversion and the reference run on top
# of it take several times that, so 4 KiB per pixel is the estimate a request is refused by.
BYTES_PER_INPUT_PIXEL = 4096


def check_input_budget(batch: int, size: tuple[int, int], *, exporting: bool = True,
                       available: int | None = None) -> None:
    """Refuse, before any work, an input size or batch that no phone model has or, when ``exporting``, that this
    host cannot hold while exporting (``available`` bytes; default: what the OS reports)."""
    if max(size) > MAX_SIDE:
        raise InputSizeError(f"image size {size[0]}x{size[1]}: more than {MAX_SIDE} px per side is beyond what a phone "
                             "model takes (and what export can hold in memory)")
    if batch > MAX_BATCH:
        raise InputSizeError(f"batch {batch}: more than {MAX_BATCH} is beyond what a phone model takes")
    if not exporting:
        return
    needed = batch * size[0] * size[1] * BYTES_PER_INPUT_PIXEL
    available = available_memory_bytes() if available is None else available
    if available is not None and needed > available:
        raise InputSizeError(f"batch {batch} at {size[0]}x{size[1]} px needs about {needed / 2**30:.1f} GiB to export "
                             f"and verify (an estimate: {BYTES_PER_INPUT_PIXEL // 1024} KiB per input pixel), this host "
                             f"has {available / 2**30:.1f} GiB available; use a smaller batch or size")


# Instruction-set features that change kernel choice (and so latency) in the runtimes we time.
ISA_FEATURES = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",  # x86
    "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2", "sme",  # Arm: NEON, dotprod, fp16, ...
)


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or platform.processor() or platform.machine()


def cpu_identity() -> dict[str, object]:
    """Vendor, family/model/stepping and the ISA features that matter: two "AMD EPYC" hosts can differ 3x."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    identity: dict[str, object] = {
        "cpu_vendor": info.get("vendor_id") or info.get("CPU implementer"),
        "cpu_family": info.get("cpu family") or info.get("CPU architecture"),
        "cpu_model_number": info.get("model") or info.get("CPU part"),
        "cpu_stepping": info.get("stepping") or info.get("CPU revision"),
        "cpu_isa": [feature for feature in ISA_FEATURES if feature in flags],
    }
    return {key: value for key, value in identity.items() if value not in (None, "")}


def isa_capped() -> bool:
    """Whether this process runs under ``benchmarks/isa_cap.py``: its runtimes' CPUID answered without AVX-512, VNNI
    and AMX, so they pick their AVX2 kernels. The cap's library sets ``FAT_DEPLOY_ISA_CAP`` and must be mapped."""
    if os.environ.get("FAT_DEPLOY_ISA_CAP") != "avx2":
        return False
    try:
        return "cpuid_cap.so" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def int8_isa() -> str:
    """The x86 instruction set int8 kernels pick here, in a few words: "AVX-512 VNNI", "AVX-VNNI", "AVX2 (no
    VNNI)"; int8 speed-ups differ most between these (VNNI multiplies int8 pairs in one instruction)."""
    isa = set(cpu_identity().get("cpu_isa") or [])  # type: ignore[call-overload]
    if "avx2" in isa and isa_capped():
        return "AVX2 (no VNNI; capped by CPUID masking on an AVX-512 CPU)"
    if "avx512_vnni" in isa:
        return "AVX-512 VNNI"
    if "avx_vnni" in isa:
        return "AVX-VNNI"
    if "avx2" in isa:
        return "AVX2 (no VNNI)"
    return platform.machine()


def host_info() -> dict[str, object]:
    """CPU model and identity, cores, OS and Python of this machine."""
    return {
        "cpu": cpu_model(),
        **cpu_identity(),
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


@contextlib.contextmanager
def native_output_captured() -> Iterator[None]:
    """Send stdout and stderr (Python and native libraries) to a discarded temporary file meanwhile.

    Converters and runtimes print progress bars, absl/oneDNN lines and warnings from C++ and Python; the
    CLIs show them only with ``--verbose``. Write what the user should see to streams opened before this.
    """
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile("w+") as sink:
        try:
            saved = (os.dup(1), os.dup(2))
        except OSError:
            saved = None
        try:
            if saved:
                os.dup2(sink.fileno(), 1)
                os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
        finally:
            sink.flush()
            if saved:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
