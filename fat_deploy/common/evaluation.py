"""``--eval-dir``: task accuracy on labeled images, for the PyTorch model and for every artifact.

The folder is the usual image-folder layout, one subfolder per class. A subfolder maps to a class index by
``--eval-map`` (a JSON object ``{"folder": index}``), else by being one of the labels (``--labels`` or the
default names), else by being a class index itself. Images are preprocessed exactly as the manifest describes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.common.calibration import folder_images, preprocess
from fat_deploy.errors import FatDeployError
from fat_deploy.models.spec import ModelSpec

DEFAULT_MAX_ACCURACY_DROP = 1.0  # top-1 percentage points a quantized artifact may lose on --eval-dir
MIN_JUDGING_IMAGES = 100  # below this, one image is > 1 point: the drop says little and the logits gate stays


def judging_problem(images: int, classes: int, reference_top1: float) -> str | None:
    """Why an evaluation set cannot replace the logits gate (too few images, or a reference that does not do
    the task: top-1 less than halfway from chance to 100%), else None."""
    chance = 100.0 / max(classes, 1)
    if images < MIN_JUDGING_IMAGES:
        return f"{images} images, fewer than {MIN_JUDGING_IMAGES}"
    if reference_top1 < (chance + 100.0) / 2:
        return (f"the PyTorch model's top-1 is {reference_top1:.1f}%, less than halfway from chance "
                f"({chance:.1f}% for {classes} classes) to 100%")
    return None


class EvaluationError(FatDeployError):
    """A labeled evaluation folder that cannot be used."""


@dataclass(frozen=True)
class EvalSet:
    folder: str
    inputs: np.ndarray  # NCHW float32, preprocessed
    targets: np.ndarray  # class indices
    classes: dict[str, int]  # subfolder -> class index

    def describe(self) -> dict[str, Any]:
        return {"folder": Path(self.folder).name, "images": int(len(self.targets)), "classes": len(self.classes)}


@dataclass(frozen=True)
class Evaluation:
    """What --eval-dir asks of an export: the labeled set and the top-1 drop a quantized artifact may have."""

    eval_set: EvalSet
    max_drop: float = DEFAULT_MAX_ACCURACY_DROP


def class_map(folder: Path, labels: list[str], num_classes: int, mapping_file: str | Path | None) -> dict[str, int]:
    """Subfolder name -> class index; every subfolder must map (one-line errors name the first that does not)."""
    if not folder.is_dir():
        raise EvaluationError(f"--eval-dir {folder}: not a folder" if folder.exists() else f"--eval-dir {folder} not found")
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise EvaluationError(f"--eval-dir {folder} has no class subfolders (expected DIR/<class>/<images>)")
    if mapping_file is not None:
        try:
            mapping = json.loads(Path(mapping_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise EvaluationError(f"--eval-map {mapping_file}: {getattr(error, 'strerror', None) or error}") from None
        if not isinstance(mapping, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
            raise EvaluationError(f"--eval-map {mapping_file} must be a JSON object of folder name -> class index")
        lookup = {str(name): index for name, index in mapping.items()}
    else:
        lookup = {label: index for index, label in enumerate(labels)}
        lookup.update({str(i): i for i in range(num_classes) if str(i) not in lookup})
    missing = [name for name in subfolders if name not in lookup]
    if missing:
        source = f"--eval-map {mapping_file}" if mapping_file else "the labels or class indices"
        raise EvaluationError(f"--eval-dir {folder}: class folder {missing[0]!r} is not in {source}"
                              + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    classes = {name: lookup[name] for name in subfolders}
    if bad := [name for name, index in classes.items() if not 0 <= index < num_classes]:
        raise EvaluationError(f"--eval-dir {folder}: folder {bad[0]!r} maps to class {classes[bad[0]]}, "
                              f"the model has {num_classes} classes")
    return classes


def load_eval_set(folder: str | Path, spec: ModelSpec, img_size: tuple[int, int], labels: list[str],
                  num_classes: int, mapping_file: str | Path | None = None) -> EvalSet:
    """Every image of every class subfolder, preprocessed; unreadable images or empty classes are errors."""
    root = Path(folder)
    classes = class_map(root, labels, num_classes, mapping_file)
    inputs, targets = [], []
    for name, index in classes.items():
        try:
            count = 0
            for _, image in folder_images(root / name):  # one decoded image at a time
                inputs.append(preprocess(image, spec, img_size))
                count += 1
        except FatDeployError as error:
            raise EvaluationError(f"--eval-dir: {error}") from None
        targets += [index] * count
    return EvalSet(str(root), np.stack(inputs), np.asarray(targets), classes)


def accuracy(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy in percent."""
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    return {"top1": round(float((top5[:, 0] == targets).mean() * 100), 3),
            "top5": round(float((top5 == targets[:, None]).any(axis=1).mean() * 100), 3)}
