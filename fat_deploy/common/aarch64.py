"""Artifacts run by the aarch64 builds of their runtimes, under user-mode emulation (``fat-export --arm64``).

Phones run the ARM64 builds of onnxruntime and LiteRT: NEON, dot-product and fp16 kernels, other int8
requantization, depthwise and GEMM code than the x86 builds that verify every artifact here. The emulation root
(``scripts/arm64-root.sh``, ``make arm64-root``) holds Debian's arm64 Python 3.11 and the aarch64 wheels pinned in
``arm64-requirements.txt``; ``qemu-aarch64-static -cpu cortex-a76`` (Armv8.2-A with fp16 arithmetic and dot
product, the CPU of many 2019-2023 phones) runs a runtime package's runner script in it. What this covers: the ARM
kernels' arithmetic, bit for bit as on a Cortex-A76 (qemu emulates the instructions exactly). What it does not: speed
(emulation is ~500x slower and says nothing of a phone's milliseconds), GPU/NPU delegates, and runtimes whose
aarch64 build is older than the host's (LiteRT: 1.4.0 there, 2.3.0 here).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fat_deploy.environment import cache_root
from fat_deploy.telemetry import ONNXRUNTIME_OPT_OUT

CPU_MODEL = "cortex-a76"
QEMU = "qemu-aarch64-static"
ROOT_VARIABLE = "FAT_DEPLOY_ARM64_ROOT"
PROBE = str(Path(__file__).with_name("probe.py"))
SECONDS_PER_INPUT = 120.0  # an emulated FAT-B0 inference takes 5-8 s here; a hung runtime is stopped


class EmulationError(Exception):
    """The emulated runtime failed; the message is one line."""


def emulation_root() -> Path:
    """``$FAT_DEPLOY_ARM64_ROOT``, else ``$XDG_CACHE_HOME/fat-deploy/arm64-root`` (``~/.cache`` by default): where
    ``make arm64-root`` puts it."""
    if value := os.environ.get(ROOT_VARIABLE):
        return Path(value)
    return cache_root() / "arm64-root"


def unavailable_reason() -> str | None:
    """Why artifacts cannot run under ARM64 emulation here (None: they can)."""
    root = emulation_root()
    if not any(root.glob(".complete-*")):
        return f"no ARM64 emulation root at {root} (make arm64-root: needs root and apt-get, Debian)"
    if subprocess.run(["which", QEMU], capture_output=True).returncode != 0:
        return f"{QEMU} is not installed (apt-get install qemu-user-static)"
    return None


def qemu_version() -> str:
    first = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()
    return first[0].strip() if first else "unknown"


@dataclass(frozen=True)
class EmulatedRun:
    """Outputs of the artifact on the emulated CPU, and what ran it."""

    outputs: np.ndarray
    runtime: str
    version: str
    seconds: float

    def describe(self) -> dict[str, object]:
        return {"runtime": f"{self.runtime} {self.version} (aarch64 wheel)", "cpu_emulated": CPU_MODEL,
                "emulator": qemu_version(), "seconds": round(self.seconds, 1),
                "covers": "the aarch64 build's CPU kernels, instruction for instruction; not speed, not GPU/NPU"}


def run_emulated(adapter: Path, artifact: Path, inputs: np.ndarray) -> EmulatedRun:
    """``artifact`` run on ``inputs`` by a runtime's standalone ``adapter`` (:mod:`fat_deploy.common.probe`) in the
    emulated aarch64 Python."""
    if reason := unavailable_reason():
        raise EmulationError(reason)
    root = emulation_root()
    environment = {"PATH": "/usr/bin:/bin", "PYTHONHOME": str(root / "usr"), "PYTHONPATH": str(root / "site"),
                   "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
                   ONNXRUNTIME_OPT_OUT: os.environ.get(ONNXRUNTIME_OPT_OUT, "1")}  # the aarch64 wheel reports too
    with tempfile.TemporaryDirectory(prefix="fat-deploy-arm64-") as scratch:
        given, produced = Path(scratch) / "inputs.npy", Path(scratch) / "outputs.npy"
        np.save(given, np.ascontiguousarray(inputs, dtype=np.float32))
        started = time.perf_counter()
        try:
            finished = subprocess.run(
                [QEMU, "-cpu", CPU_MODEL, "-L", str(root), str(root / "usr/bin/python3.11"), "-s", PROBE, "run",
                 str(adapter), str(artifact.resolve()), str(given), str(produced)],
                capture_output=True, text=True, env=environment, cwd=scratch,
                timeout=SECONDS_PER_INPUT * (len(inputs) + 1))
        except subprocess.TimeoutExpired:
            raise EmulationError(f"the emulated runtime ran past {SECONDS_PER_INPUT * (len(inputs) + 1):.0f} s") from None
        seconds = time.perf_counter() - started
        if finished.returncode != 0 or not produced.is_file():
            lines = [line for line in finished.stderr.splitlines() if line.strip()]
            raise EmulationError(f"the emulated runtime failed (exit {finished.returncode}): "
                                 f"{lines[-1][:200] if lines else 'no message'}")
        described = json.loads(finished.stdout.strip().splitlines()[-1])
        return EmulatedRun(np.load(produced), str(described["runtime"]), str(described["version"]), seconds)
