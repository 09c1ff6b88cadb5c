"""Class names: read from a labels file or given as a list, one unique non-empty name per class."""

from __future__ import annotations

from pathlib import Path

from fat_deploy.errors import FatDeployError


def read_labels(path: str | Path, num_classes: int) -> list[str]:
    path = Path(path)
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise FatDeployError(f"cannot read labels file {path}: {error}") from None
    return check_labels(labels, num_classes, f"labels file {path}")


def check_labels(labels: list[str], num_classes: int, source: str = "labels") -> list[str]:
    """One unique, non-empty name per class."""
    if not all(isinstance(label, str) and label.strip() for label in labels):
        raise FatDeployError(f"{source}: every label must be a non-empty string")
    if len(labels) != num_classes:
        raise FatDeployError(f"{source} has {len(labels)} labels, the model has {num_classes} classes")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        shown = ", ".join(repr(label) for label in repeated[:3]) + (" ..." if len(repeated) > 3 else "")
        raise FatDeployError(f"{source} repeats labels ({shown}): each class needs its own name")
    return labels

