"""benchmarks/isa_cap.py: a library's CPUID answered without AVX-512 and VNNI, everything else as the CPU says."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fat_deploy.environment import int8_isa, isa_capped

ISA_CAP = Path(__file__).parents[1] / "benchmarks" / "isa_cap.py"
PROBE = """
#include <cpuid.h>
#include <stdint.h>
void leaf7(uint32_t *out) { uint32_t a, b, c, d; __cpuid_count(7, 0, a, b, c, d); out[0] = b; out[1] = c; }
"""
READ_LEAF7 = ("import ctypes, sys; from fat_deploy.environment import isa_capped; lib = ctypes.CDLL(sys.argv[1]); "
              "out = (ctypes.c_uint32 * 2)(); lib.leaf7(out); print(out[0], out[1], isa_capped())")
# Leaf 7 bits the cap clears (benchmarks/native/cpuid_cap.c): EBX AVX512F/DQ/IFMA/PF/ER/CD/BW/VL, ECX
# VBMI/VBMI2/GFNI/VNNI/BITALG/VPOPCNTDQ
EBX_CLEARED = sum(1 << bit for bit in (16, 17, 21, 26, 27, 28, 30, 31))
ECX_CLEARED = sum(1 << bit for bit in (1, 6, 8, 11, 12, 14))


def load_isa_cap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("isa_cap", ISA_CAP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaf7(library: Path, environment: dict[str, str]) -> tuple[int, int, bool]:
    done = subprocess.run([sys.executable, "-c", READ_LEAF7, str(library)], env=environment, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ebx, ecx, capped = done.stdout.split()
    return int(ebx), int(ecx), capped == "True"


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="x86-64 Linux only")
@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("objdump")), reason="needs gcc and objdump")
def test_the_cap_answers_cpuid_without_avx512_and_vnni(tmp_path: Path) -> None:
    isa_cap = load_isa_cap()
    source, original, patched = tmp_path / "probe.c", tmp_path / "original" / "libprobe.so", tmp_path / "libprobe.so"
    source.write_text(PROBE)
    original.parent.mkdir()
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(original), str(source)], check=True)
    addresses = isa_cap.patched_copy(original, patched)
    assert len(addresses) == 1 and original.read_bytes().count(isa_cap.UD2) < patched.read_bytes().count(isa_cap.UD2)
    sites, report = tmp_path / "sites.txt", tmp_path / "report.txt"
    sites.write_text(f"libprobe.so {addresses[0]:x}\n")
    environment = {**os.environ, "LD_PRELOAD": str(isa_cap.build_shim(tmp_path)), "FAT_ISA_CAP_SITES": str(sites),
                   "FAT_ISA_CAP_REPORT": str(report)}
    real_ebx, real_ecx, real_capped = leaf7(original, dict(os.environ))
    ebx, ecx, capped = leaf7(patched, environment)
    assert not real_capped and capped
    assert (ebx, ecx) == (real_ebx & ~EBX_CLEARED, real_ecx & ~ECX_CLEARED)  # AVX2 (bit 5) and the rest as they are
    assert ebx & (1 << 5)  # the AVX2 this project's hosts all have
    assert report.read_text().split() == ["libprobe.so", "1"]  # one CPUID call answered, in the listed library


def test_a_cap_is_reported_only_when_its_library_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    real = int8_isa()
    monkeypatch.setenv("FAT_DEPLOY_ISA_CAP", "avx2")  # set by hand, without the cap's library mapped
    assert not isa_capped() and int8_isa() == real
