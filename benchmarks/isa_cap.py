"""Run a command with its runtimes on their AVX2 kernels: an AVX2-only host's int8 speed-ups, measured on an AVX-512 one.

    .venv/bin/python benchmarks/isa_cap.py -- .venv/bin/python benchmarks/quantization.py --modes onnx:fp32 ...

int8 speed-ups depend most on the x86 instruction set the kernels use (VNNI multiplies int8 pairs in one instruction;
AVX2 needs three), and issue 26 asks for them on AVX2 hosts without VNNI too. Without such a host, this runs the
command with onnxruntime, LiteRT (``ai_edge_litert``) and ExecuTorch picking the kernels they pick where CPUID reports
AVX2 but no AVX-512, VNNI or AMX: copies of their shared libraries, each ``cpuid`` instruction replaced by ``ud2``,
are put first on ``PYTHONPATH``, and ``native/cpuid_cap.c`` (built here with gcc, loaded with ``LD_PRELOAD``) answers
those instructions with the real CPUID minus those features (the installed packages are not touched). Afterwards it
prints how many CPUID calls each runtime library asked, and fails if a runtime the command loaded asked none (its
kernels would not be capped). fat_deploy then reports the int8 ISA as capped AVX2.

What the numbers are: the AVX2 kernels a Zen 3 or Haswell-class host picks, run on this CPU's cores (its ports,
caches and clock): a proxy for an AVX2 host's ratios, not that host's milliseconds. x86-64 Linux only; needs gcc and
binutils' objdump. PyTorch itself is not capped (it only builds and converts the models here). The command must not
install its own SIGILL handler: Python's faulthandler does (pytest enables it; ``pytest -p no:faulthandler``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import defaultdict
from importlib.util import find_spec
from pathlib import Path

PACKAGES = ("onnxruntime", "ai_edge_litert", "executorch")
SHIM_SOURCE = Path(__file__).parent / "native" / "cpuid_cap.c"
CPUID, UD2 = b"\x0f\xa2", b"\x0f\x0b"


def is_elf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == b"\x7fELF"


def cpuid_addresses(library: Path) -> list[int]:
    """Addresses (as loaded, relative to the library's base) of the ``cpuid`` instructions objdump disassembles."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                             check=True).stdout
    addresses = []
    for line in listing.splitlines():
        address, _, instruction = line.partition(":")
        if instruction.split() == ["cpuid"]:
            addresses.append(int(address.strip(), 16))
    return addresses


def file_offset(image: bytes | bytearray, address: int) -> int:
    """Where a loaded address lies in an ELF64 file, from its PT_LOAD program headers."""
    header_offset, = struct.unpack_from("<Q", image, 0x20)
    entry_size, count = struct.unpack_from("<HH", image, 0x36)
    for index in range(count):
        kind, _, offset, virtual, _, size_in_file = struct.unpack_from("<IIQQQQ", image, header_offset + index * entry_size)
        if kind == 1 and virtual <= address < virtual + size_in_file:
            return int(address - virtual + offset)
    raise ValueError(f"address {address:#x} is in no loaded segment")


def patched_copy(library: Path, destination: Path) -> list[int]:
    """Copy a shared library with each ``cpuid`` replaced by ``ud2``; return the replaced addresses."""
    image = bytearray(library.read_bytes())
    addresses = cpuid_addresses(library)
    for address in addresses:
        offset = file_offset(image, address)
        if image[offset:offset + 2] != CPUID:
            raise ValueError(f"{library}: no cpuid at {address:#x}")
        image[offset:offset + 2] = UD2
    destination.write_bytes(bytes(image))
    shutil.copymode(library, destination)
    return addresses


def package_folder(package: str) -> Path | None:
    spec = find_spec(package)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def mirror_package(package: str, source: Path, root: Path) -> dict[str, list[int]]:
    """The package under root: shared libraries copied (capped where they execute cpuid), other files linked."""
    sites: dict[str, list[int]] = {}
    for path in sorted(source.rglob("*")):
        target = root / package / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if ".so" in path.name and is_elf(path):  # copied, so that $ORIGIN run paths stay inside the copy
            addresses = patched_copy(path, target)
            if addresses:
                sites[path.name] = addresses
        else:
            target.symlink_to(path)
    return sites


def build_shim(folder: Path) -> Path:
    shim = folder / "cpuid_cap.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(shim), str(SHIM_SOURCE), "-ldl"], check=True)
    return shim


def summarize(report: Path, sites: dict[str, dict[str, list[int]]]) -> list[str]:
    """Print what each runtime library asked; return the packages loaded without a single capped answer."""
    answered: dict[str, int] = defaultdict(int)
    processes: dict[str, int] = defaultdict(int)
    for line in report.read_text().splitlines() if report.exists() else []:
        library, count = line.split()
        answered[library] += int(count)
        processes[library] += 1
    uncapped = []
    for package, libraries in sites.items():
        loaded = [name for name in libraries if processes[name]]
        for name in loaded:
            print(f"isa_cap: {package}/{name}: loaded by {processes[name]} process(es), "
                  f"{answered[name]} CPUID calls answered as AVX2 ({len(libraries[name])} sites)")
        if loaded and not any(answered[name] for name in loaded):
            uncapped.append(package)
    return uncapped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run capped (after --)")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (benchmarks/isa_cap.py -- COMMAND ...)")
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        print("isa_cap: x86-64 Linux only", file=sys.stderr)
        return 2
    missing = [tool for tool in ("gcc", "objdump") if shutil.which(tool) is None]
    if missing:
        print(f"isa_cap: needs {' and '.join(missing)} (Debian: build-essential)", file=sys.stderr)
        return 2
    if shutil.which(command[0]) is None:
        print(f"isa_cap: command not found: {command[0]}", file=sys.stderr)
        return 2
    try:
        return run_capped(command)
    except (OSError, ValueError, subprocess.CalledProcessError) as error:  # a tool failed or a library is not ELF64
        print(f"isa_cap: {error}", file=sys.stderr)
        return 2


def run_capped(command: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="isa-cap-") as scratch:
        folder = Path(scratch)
        mirror = folder / "site"
        sources = {package: package_folder(package) for package in PACKAGES}
        sites = {package: mirror_package(package, source, mirror) for package, source in sources.items() if source}
        site_list = folder / "sites.txt"
        site_list.write_text("".join(f"{name} {address:x}\n" for libraries in sites.values()
                                     for name, addresses in libraries.items() for address in addresses))
        report = folder / "report.txt"
        environment = dict(os.environ)
        environment["LD_PRELOAD"] = " ".join(filter(None, [str(build_shim(folder)), environment.get("LD_PRELOAD")]))
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(mirror), environment.get("PYTHONPATH")]))
        environment["FAT_ISA_CAP_SITES"] = str(site_list)
        environment["FAT_ISA_CAP_REPORT"] = str(report)
        print(f"isa_cap: {sum(len(a) for libs in sites.values() for a in libs.values())} cpuid sites in "
              f"{sum(len(libs) for libs in sites.values())} libraries of {', '.join(sites)}; running {command}",
              flush=True)
        returncode = subprocess.run(command, env=environment).returncode
        uncapped = summarize(report, sites)
    if uncapped:
        print(f"isa_cap: {', '.join(uncapped)} loaded but never asked CPUID through the capped copies: not capped",
              file=sys.stderr)
        return 1
    return returncode


if __name__ == "__main__":
    sys.exit(main())
