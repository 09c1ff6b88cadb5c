"""``fat-export --bundle DIR``: what an Android, iOS and web app needs, one folder per platform.

Each format says which platform folder it belongs to (``ExportFormat.bundle_platform``), which options its
app-ready form needs (``bundle_options``, e.g. TFLite's ``--mediapipe``) and how an app uses it
(``integration_guide``). A platform folder holds its verified artifacts with their manifests, ``labels.txt`` and
a ``README.md`` with the exact input contract (from the manifests) and the formats' snippets; ``bundle.json``
indexes the whole. The bundle is built in a hidden staging folder beside ``DIR`` and renamed into place only
when every artifact passed, so a failed or concurrent run leaves nothing half-written; ``--force`` replaces a
previous bundle (a folder with ``bundle.json``), never another folder.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fat_deploy.common.labels import labels_text
from fat_deploy.contract.formats import ExportFormat
from fat_deploy.exporters.placement import (
    PlacementError,
    folder_lock,
    prepare_output_dir,
    staging_folder,
)
from fat_deploy.registry import formats
from fat_deploy.version import __version__

INDEX = "bundle.json"
LABELS = "labels.txt"
PLATFORM_TITLES = {"android": "Android", "ios": "iOS", "web": "the web",
                   "edge": "edge and desktop Linux (x86, Intel GPU/NPU)"}
NOT_COMPILED = ("The snippets below were written against the documented APIs and were not compiled or run on the "
                "machine that made this bundle (it has no Android, Xcode or browser toolchain); the files themselves "
                "were checked as each section says.")


def _is_artifact(path: Path) -> bool:
    """A folder some format writes as its artifact (a Core ML package), exactly as that format writes it."""
    return any(fmt.is_artifact(path) for fmt in formats().values() if path.name.endswith(fmt.suffix))


def foreign_entries(target: Path) -> list[str]:
    """What in folder ``target`` fat-export's bundle did not write: everything, unless its ``bundle.json`` is our
    index, and then every entry the index does not list (a Core ML package must be one and nothing more)."""
    try:
        index = json.loads((target / INDEX).read_text(encoding="utf-8")) if (target / INDEX).is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        index = None
    ours = isinstance(index, dict) and str(index.get("made_by", "")).startswith("fat-deploy")
    platforms = index.get("platforms") if isinstance(index, dict) else None
    if not ours or not isinstance(platforms, dict) or (target / INDEX).is_symlink():
        return sorted(entry.name for entry in target.iterdir())
    foreign = []
    for entry in sorted(target.iterdir()):
        if entry.name == INDEX:
            continue
        listed = platforms.get(entry.name)
        files = listed.get("files") if isinstance(listed, dict) else None
        if not isinstance(files, list) or entry.is_symlink() or not entry.is_dir():
            foreign.append(entry.name)
            continue
        for item in sorted(entry.iterdir()):
            if item.name not in files or item.is_symlink() or not (item.is_file() or _is_artifact(item)):
                foreign.append(f"{entry.name}/{item.name}")
    return foreign


def check_bundle_target(target: Path, force: bool) -> None:
    """Refuse a target that holds something other than nothing, an empty folder or (with --force) a bundle that
    fat-export wrote, with nothing added to it."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise PlacementError(f"--bundle {target}: something other than a folder is there")
    if target.is_dir() and any(target.iterdir()):
        if foreign := foreign_entries(target):
            shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
            raise PlacementError(f"--bundle {target} holds files that fat-export did not write ({shown}); "
                                 "choose another folder or move them away")
        if not force:
            raise PlacementError(f"--bundle {target} holds a previous bundle; --force replaces it")


@contextlib.contextmanager
def bundle_staging(target: Path) -> Iterator[Path]:
    """A folder to build the bundle in, beside ``target`` (same file system: the final rename is atomic)."""
    parent = prepare_output_dir(target.parent if str(target.parent) else Path("."))
    with staging_folder(parent) as staging:
        built = staging / target.name
        built.mkdir()
        yield built


def place_bundle(built: Path, target: Path, force: bool) -> None:
    """Rename the built bundle to ``target``; a previous bundle there is replaced only with ``force``."""
    with folder_lock(built.parent.parent):
        check_bundle_target(target, force)  # again: a concurrent run may have placed one meanwhile
        previous = built.parent / "previous"
        had_previous = target.is_dir() and any(target.iterdir())
        if target.is_dir() and not had_previous:
            target.rmdir()
        if had_previous:
            os.rename(target, previous)
        try:
            os.rename(built, target)
        except OSError as error:
            if had_previous:
                os.rename(previous, target)
            raise PlacementError(f"cannot place the bundle at {target}: {error.strerror or error}") from None
        if had_previous:
            shutil.rmtree(previous)


def write_bundle_files(root: Path, model: str, artifacts: list[tuple[ExportFormat, Path, dict[str, Any]]],
                       labels: list[str]) -> dict[str, Any]:
    """labels.txt and README.md per platform folder, and the index; ``artifacts`` are (format, file, manifest)."""

    platforms: dict[str, list[tuple[ExportFormat, Path, dict[str, Any]]]] = {}
    for fmt, path, manifest in artifacts:
        platforms.setdefault(str(fmt.bundle_platform), []).append((fmt, path, manifest))
    index: dict[str, Any] = {"model": model, "made_by": f"fat-deploy {__version__}",
                             "created": datetime.now(UTC).isoformat(timespec="seconds"), "platforms": {}}
    for platform, items in platforms.items():
        folder = root / platform
        (folder / LABELS).write_text(labels_text(labels), encoding="utf-8")
        (folder / "README.md").write_text(platform_readme(platform, model, items), encoding="utf-8")
        extra = [name for fmt, path, manifest in items for name in fmt.write_bundle_extras(folder, manifest)]
        index["platforms"][platform] = {
            "files": sorted(p.name for p in folder.iterdir()),
            "artifacts": [{"file": path.name, "format": fmt.name, "precision": manifest["precision"],
                           "status": manifest["status"], "sha256": manifest["file"]["sha256"]}
                          for fmt, path, manifest in items],
            "extra_files": extra,
        }
    (root / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index


def markdown_text(text: str) -> str:
    """``text`` shown as itself in Markdown and in the HTML a Markdown viewer makes of it (a user's file name may hold
    ``<script>``, ``*`` or ``[link](...)``)."""
    text = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+!|~-])", r"\\\1", text)


def input_contract(manifest: dict[str, Any]) -> str:
    """The preprocessing an app must do for tensor inputs, from a manifest, as Markdown lines."""
    pre = manifest["preprocessing"]
    height, width = pre["center_crop"]
    return "\n".join([
        f"- Decode to RGB, upright: apply the photo's EXIF orientation (camera images are often stored sideways); "
        f"{pre['resize']} ({pre['interpolation']} interpolation).",
        f"- Values: pixel / 255, then per channel (x - mean) / std with mean {pre['mean']} and std {pre['std']} "
        "(R, G, B).",
        f"- Output: {manifest['labels']['count']} scores in class-index order; `{LABELS}` line i names class i "
        f"({markdown_text(manifest['labels']['source'])}).",
        f"- Crop geometry as a region of interest: a centred square of {pre['crop_fraction']:g} x the shorter side "
        f"(for frameworks that crop and scale themselves), scaled to {height} x {width}.",
    ])


def platform_readme(platform: str, model: str, items: list[tuple[ExportFormat, Path, dict[str, Any]]]) -> str:
    lines = [f"# {model} for {PLATFORM_TITLES.get(platform, platform)}", "",
             "Every model file here was checked before it was written: run in its runtime and compared with the "
             "PyTorch model where that runtime exists on the machine that made the bundle (status `passed`), "
             "otherwise checked structurally (`exported-not-verified`; Core ML prediction needs macOS). Its "
             "manifest (`<file>.json`) records how (inputs, tolerances, results) and its exact input and output "
             "tensors.", "",
             "| file | format | precision | status | size MB |", "|---|---|---|---|---|"]
    for fmt, path, manifest in items:
        lines.append(f"| `{path.name}` | {fmt.name} | {manifest['precision']} | {manifest['status']} | "
                     f"{manifest['file']['size_bytes'] / 1e6:.1f} |")
    lines += ["", "## Input contract", "", "What the model saw in training. Files that take an image (the MediaPipe "
              ".tflite, the Core ML classifier) do the value steps inside; every file needs the crop.", "",
              input_contract(items[0][2]), "", NOT_COMPILED, ""]
    for fmt, path, manifest in items:
        lines += [fmt.integration_guide(path.name, manifest).strip(), ""]
    return "\n".join(lines)
