"""Putting a verified artifact and its manifest in place: as a pair, atomically, never over what a user has.

Every export is staged in a hidden ``.fat-export-*`` folder inside the output folder, marked as fat-export's own
by a marker file, which the export holds an exclusive ``flock`` on while it lives; a marked staging folder nobody
holds (its export was killed) is stale and the next export into that folder removes it. A folder of that name
without the marker is a user's and is left alone. Placement takes an exclusive lock on the output folder, checks
that the targets are still what they were when the request was checked (nothing appeared, nothing was
swapped by a concurrent run), then moves the artifact and the manifest in; if the second move fails the
first is undone and any replaced file restored.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fat_deploy.errors import FatDeployError

STAGING_PREFIX = ".fat-export-"
STAGING_MARKER = ".fat-export-staging"  # the file that makes a staging folder fat-export's own
STAGING_MARKER_TEXT = "a fat-export staging folder: removed when no export holds it\n"


class PlacementError(FatDeployError):
    """The output folder or a target path cannot take the artifact."""


Identity = tuple[int, int, int, int] | None  # (device, inode, mtime ns, size) of what is at a path; None: nothing


def identity(path: Path) -> Identity:
    """What is at ``path`` now (a dangling symlink counts as something)."""
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _describe_os_error(error: OSError) -> str:
    return error.strerror or str(error)


def prepare_output_dir(out: str | Path) -> Path:
    """Create ``out`` if needed and prove that files can be created in it (one-line error otherwise)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}probe-", dir=out)
        os.rmdir(probe)
    except FileExistsError:
        raise PlacementError(f"cannot create output folder {out}: a file is in the way") from None
    except OSError as error:
        raise PlacementError(f"cannot create output folder {out}: {_describe_os_error(error)}") from None
    return out


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` itself (released when the process dies)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def is_own_staging(entry: Path) -> bool:
    """A folder fat-export staged in: a real folder holding fat-export's marker file (not a user's
    ``.fat-export-notes``)."""
    marker = entry / STAGING_MARKER
    if entry.is_symlink() or not entry.is_dir() or marker.is_symlink() or not marker.is_file():
        return False
    try:
        return marker.stat().st_size == len(STAGING_MARKER_TEXT) and marker.read_text() == STAGING_MARKER_TEXT
    except (OSError, UnicodeDecodeError):
        return False


def remove_stale_staging(folder: Path) -> list[str]:
    """Delete fat-export's staging folders that no live export holds (left by a killed run); returns their names."""
    removed = []
    for entry in folder.glob(f"{STAGING_PREFIX}*"):
        if not is_own_staging(entry):
            continue
        try:
            descriptor = os.open(entry, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue  # a live export holds it
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        finally:
            os.close(descriptor)
    return removed


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A private, locked staging folder in ``out``, removed on exit; stale ones are cleaned first."""
    with folder_lock(out):
        remove_stale_staging(out)
        try:
            path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        except OSError as error:
            raise PlacementError(f"cannot write in output folder {out}: {_describe_os_error(error)}") from None
        descriptor = os.open(path, os.O_RDONLY)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        (path / STAGING_MARKER).write_text(STAGING_MARKER_TEXT)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(descriptor)


@dataclass(frozen=True)
class Targets:
    """Where an artifact and its manifest go, and what was at those paths when the request was checked."""

    artifact: Path
    manifest: Path
    artifact_before: Identity
    manifest_before: Identity


def check_targets(artifact: Path, manifest: Path, force: bool, is_artifact: Callable[[Path], bool]) -> Targets:
    """Refuse, before any work, targets that exist (without ``force``) or that ``force`` must not replace: a folder
    at the artifact path is replaced only when ``is_artifact`` (the format's own test) says it is one it writes."""
    for path, kind in ((artifact, "artifact"), (manifest, "manifest")):
        if not os.path.lexists(path):
            continue
        if not force:
            what = "is a dangling symlink" if path.is_symlink() and not path.exists() else "already exists"
            raise PlacementError(f"{path} {what}; pass --force to overwrite it")
        if path.is_dir() and not path.is_symlink() and not (kind == "artifact" and is_artifact(path)):
            raise PlacementError(f"{path} is a folder that is not a previous {kind} (or holds files the format does "
                                 "not write); fat-export will not delete it, even with --force: move it away")
    return Targets(artifact, manifest, identity(artifact), identity(manifest))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def place_pair(staged_artifact: Path, staged_manifest: Path, targets: Targets) -> None:
    """Move both staged files onto their targets, or neither; refuse if a target changed since the check."""
    with folder_lock(targets.artifact.parent):
        for path, before in ((targets.artifact, targets.artifact_before), (targets.manifest, targets.manifest_before)):
            if identity(path) != before:
                raise PlacementError(
                    f"{path} appeared or changed while this export ran (another fat-export into the same folder?); "
                    "it was kept and this export discarded")
        moved: list[Path] = []
        backups: list[tuple[Path, Path]] = []
        try:
            for source, target in ((staged_artifact, targets.artifact), (staged_manifest, targets.manifest)):
                if os.path.lexists(target):
                    backup = target.with_name(f".{target.name}.fat-export-backup-{os.getpid()}")
                    os.replace(target, backup)
                    backups.append((target, backup))
                os.replace(source, target)
                moved.append(target)
        except OSError as error:
            for target in moved:
                _remove(target)
            for target, backup in backups:
                os.replace(backup, target)
            raise PlacementError(f"cannot place {targets.artifact.name} and its manifest in "
                                 f"{targets.artifact.parent}: {_describe_os_error(error)}; nothing was changed") from None
        for _, backup in backups:
            _remove(backup)
