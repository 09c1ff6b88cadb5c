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
    broken = next((i for i, label in enumerate(labels) if label.splitlines() != [label.strip()]), None)
    if broken is not None:
        raise FatDeployError(f"{source}: label {broken} ({labels[broken]!r}) has a line break or spaces at its ends; "
                             "labels files hold one name per line, so it would not read back the same")
    if len(labels) != num_classes:
        raise FatDeployError(f"{source} has {len(labels)} labels, the model has {num_classes} classes")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        shown = ", ".join(repr(label) for label in repeated[:3]) + (" ..." if len(repeated) > 3 else "")
        raise FatDeployError(f"{source} repeats labels ({shown}): each class needs its own name")
    return labels


def default_labels(num_classes: int) -> tuple[list[str], str]:
    """ImageNet-1k class names (timm's ImageNet metadata) for a 1000-class head, else the class indices.

    ImageNet names two classes "crane" (the bird and the machine); those get their WordNet id appended, so the
    names are unique and a labels file written from them is accepted back by ``--labels``."""
    if num_classes == 1000:
        from timm.data.imagenet_info import ImageNetInfo

        info = ImageNetInfo()
        names = [info.index_to_description(i) for i in range(1000)]
        repeated = {name for name in names if names.count(name) > 1}
        names = [f"{name} ({info.index_to_label_name(i)})" if name in repeated else name for i, name in enumerate(names)]
        return names, "ImageNet-1k names (timm ImageNetInfo)"
    return [str(i) for i in range(num_classes)], "class indices (no --labels given)"


def labels_text(labels: list[str]) -> str:
    """A labels file: one name per line, in class-index order (what TFLite metadata, MediaPipe and apps read)."""
    return "".join(f"{label}\n" for label in labels)
