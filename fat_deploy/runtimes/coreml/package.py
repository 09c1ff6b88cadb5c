"""What a Core ML package is: the folder coremltools writes, and nothing a user added to it."""

from __future__ import annotations

import json
from pathlib import Path

from fat_deploy.common.inputs import inside

# What coremltools writes into a .mlpackage: the manifest, and the model under Data/com.apple.CoreML/.
PACKAGE_MANIFEST, PACKAGE_DATA = "Manifest.json", ("Data", "com.apple.CoreML")


def is_coreml_package(path: Path) -> bool:
    """A real Core ML package and nothing beside it: a ``.mlpackage`` folder whose ``Manifest.json`` is the package
    manifest coremltools writes (its root model among its items) and whose other entries are regular files and
    folders under ``Data/com.apple.CoreML/``. A user's folder, or a package with a user's file added, is not."""
    if path.suffix != ".mlpackage" or path.is_symlink() or not path.is_dir():
        return False
    manifest = path / PACKAGE_MANIFEST
    try:
        if manifest.is_symlink() or not manifest.is_file() or manifest.stat().st_size > 1 << 20:
            return False
        entries = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    items = entries.get("itemInfoEntries") if isinstance(entries, dict) else None
    if not isinstance(items, dict) or entries.get("rootModelIdentifier") not in items:
        return False
    data = path.joinpath(*PACKAGE_DATA)
    for entry in path.rglob("*"):
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            return False
        if entry == manifest or entry in (path / PACKAGE_DATA[0], data) or data in entry.parents:
            continue
        return False
    return True


def check_package_paths(package: Path) -> None:
    """Refuse a package whose ``Manifest.json`` names an item outside its ``Data`` folder (``../``, absolute path):
    coremltools would open whatever file it names."""
    try:
        entries = json.loads((package / PACKAGE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RuntimeError(f"no readable Manifest.json ({type(error).__name__})") from None
    items = entries.get("itemInfoEntries") if isinstance(entries, dict) else None
    if not isinstance(items, dict):
        raise RuntimeError("Manifest.json has no itemInfoEntries")
    for item in items.values():
        relative = item.get("path") if isinstance(item, dict) else None
        if not isinstance(relative, str):
            raise RuntimeError("Manifest.json has an item without a path")
        inside(package / PACKAGE_DATA[0], relative)
