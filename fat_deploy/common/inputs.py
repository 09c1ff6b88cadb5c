"""Model files and packages given to the tools are untrusted: check them before any reader opens them.

A reader must not hang (a FIFO named ``model.onnx``), run out of memory (``/dev/zero`` named ``.onnx``, a 3 GB sparse
file), read outside what it was given (a symlink inside a package) or change it (coremltools rewrites a package's
``Manifest.json`` when it opens one). So: only regular files, no larger than the 2 GiB that a protobuf message
(ONNX, Core ML) or a flatbuffer (TFLite, ExecuTorch) can address, and folders copied into a private temporary
folder, regular files and folders only, before a reader sees them.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fat_deploy.errors import FatDeployError

MAX_MODEL_BYTES = (1 << 31) - 1  # protobuf's and flatbuffers' 2 GiB limit


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def package_entries(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """Every entry under ``folder`` with its own ``lstat`` (links not followed), or a one-line refusal naming the
    first one that is neither a regular file nor a folder (a symlink could lead a reader out of the package)."""
    entries = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs) + sorted(files):
            entry = Path(root) / name
            info = entry.lstat()
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise FatDeployError(f"{folder}: {entry.relative_to(folder)} is {_kind(info.st_mode)}; a package holds "
                                     "only regular files and folders (refused: it could lead outside the package)")
            entries.append((entry, info))
    return entries


def check_model_input(path: Path, limit: int = MAX_MODEL_BYTES) -> None:
    """Refuse, in one line, a ``path`` that is missing, not a regular file or folder, a folder holding anything else,
    or larger than ``limit`` bytes in all. Nothing is opened."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FatDeployError(f"{path}: no such file") from None
    except OSError as error:
        raise FatDeployError(f"{path}: cannot read it: {error.strerror or type(error).__name__}") from None
    if stat.S_ISDIR(info.st_mode):
        size = sum(entry.st_size for _, entry in package_entries(path) if stat.S_ISREG(entry.st_mode))
    elif stat.S_ISREG(info.st_mode):
        size = info.st_size
    else:
        raise FatDeployError(f"{path}: {_kind(info.st_mode)}, not a model file; refused (reading it could block or "
                             "never end)")
    if size > limit:
        raise FatDeployError(f"{path}: {size / 2**20:,.0f} MiB is more than a model file can hold "
                             f"({limit / 2**20:,.0f} MiB: the protobuf / flatbuffer limit); refused")


@contextmanager
def private_view(path: Path, limit: int = MAX_MODEL_BYTES) -> Iterator[Path]:
    """``path`` checked (:func:`check_model_input`) and, for a folder, copied (regular files and folders only) into a
    temporary folder that is removed afterwards; the reader is given the copy, so it can neither follow a link out
    of the package nor write into the user's. A single file is given as it is: readers open files read-only."""
    check_model_input(path, limit)
    if not path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="fat-deploy-input-") as scratch:
        copy = Path(scratch) / path.name
        copy.mkdir()
        for entry, info in package_entries(path):
            target = copy / entry.relative_to(path)
            if stat.S_ISDIR(info.st_mode):
                target.mkdir()
                continue
            with open(entry, "rb", opener=_no_follow) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        yield copy


def _no_follow(name: str, flags: int) -> int:
    """``open`` that refuses a path swapped for a link or FIFO after the check (no blocking open either)."""
    return os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def inside(folder: Path, relative: str) -> Path:
    """``folder / relative`` when that stays inside ``folder`` (no absolute path, no ``..`` out of it, no link);
    a one-line refusal otherwise."""
    candidate = folder / relative
    if Path(relative).is_absolute() or not candidate.resolve().is_relative_to(folder.resolve()):
        raise FatDeployError(f"{folder}: names {relative!r}, a path outside it; refused")
    return candidate
