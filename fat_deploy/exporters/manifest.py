"""The sidecar JSON written next to every artifact: what it is, how to feed it, how it was checked."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

MANIFEST_SCHEMA_VERSION = 1
REQUIRED_KEYS = (
    "schema_version", "model", "variant_source", "checkpoint", "format", "precision", "input",
    "output", "preprocessing", "labels", "file", "tool_versions", "export_seconds",
    "verification", "host", "created",
)


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of every file in a directory (sorted by relative path)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def manifest_path_for(artifact: Path) -> Path:
    return artifact.with_name(artifact.name.rsplit(".", 1)[0] + ".json")


def validate_manifest(payload: dict[str, Any]) -> list[str]:
    """Missing top-level keys (empty when the manifest is complete)."""
    return [key for key in REQUIRED_KEYS if key not in payload]
