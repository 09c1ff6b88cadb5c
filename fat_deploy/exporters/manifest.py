"""The sidecar JSON written next to every artifact: what it is, how to feed it, how it was checked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from fat_deploy.common.calibration import ORIENTATION, resize_contract
from fat_deploy.common.files import sha256_of, size_of
from fat_deploy.contract.formats import ExportFormat, ExportRequest
from fat_deploy.environment import host_info
from fat_deploy.exporters.verification import Status
from fat_deploy.registry import recorded_versions

MANIFEST_SCHEMA_VERSION = 1
REQUIRED_KEYS = (
    "schema_version", "model", "variant_source", "checkpoint", "format", "precision", "input",
    "output", "preprocessing", "labels", "file", "tool_versions", "export_seconds",
    "verification", "host", "created",
)


def manifest_path_for(artifact: Path) -> Path:
    return artifact.with_name(artifact.name.rsplit(".", 1)[0] + ".json")


def validate_manifest(payload: dict[str, Any]) -> list[str]:
    """Missing top-level keys (empty when the manifest is complete)."""
    return [key for key in REQUIRED_KEYS if key not in payload]


def build_manifest(
    request: ExportRequest, fmt: ExportFormat, path: Path, details: dict[str, Any],
    verification: dict[str, Any], status: Status, seconds: float, checkpoint: str | Path | None,
    labels_source: str, deploy: bool,
) -> dict[str, Any]:
    """The manifest of a verified artifact at ``path`` (see docs/DESIGN.md for the fields)."""
    spec = request.spec
    io = fmt.io_spec(request)
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "model": request.model_name,
        "variant_source": spec.source,
        "official_configuration": spec.official,
        "checkpoint": {"file": Path(checkpoint).name, "sha256": sha256_of(Path(checkpoint)),
                       **getattr(request.reference, "checkpoint_notes", {})} if checkpoint else "random init",
        "deploy_form": deploy,
        "format": fmt.name,
        "precision": request.precision,
        "status": status,
        "input": io["input"],
        "output": io["output"],
        "preprocessing": {
            "orientation": ORIENTATION,
            **resize_contract(spec, request.img_size),
            "center_crop": list(request.img_size), "interpolation": spec.interpolation,
            "value_range": "RGB / 255 -> [0, 1]", "mean": list(spec.mean), "std": list(spec.std),
        },
        "labels": {"source": labels_source, "count": request.num_classes, "names": request.labels},
        "file": {"name": path.name, "size_bytes": size_of(path), "sha256": sha256_of(path)},
        "format_details": details,
        "tool_versions": {**recorded_versions(), "torch": torch.__version__},
        "export_seconds": round(seconds, 2),
        "verification": verification,
        "host": host_info(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
