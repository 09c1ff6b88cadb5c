"""The test bed's folder: weights (the repository's shipped file, or a fresh training run), the held-out and
calibration images the recipe draws, labels and a record; verified, then cached.

The weights ship in the repository (``testbed/``, 17 MB, with a record of the run that trained them) because
training takes about 240 CPU-seconds, most of a clean clone's set-up; a pip-installed fat-deploy has no
``testbed/`` and trains (``--train`` always does). Shipped weights are used only if their record names this code's
recipe (:func:`~fat_deploy.testbed.recipe.recipe_digest`), their bytes match the record's SHA-256, they load into
FAT-B0 key for key, and they reproduce the recorded held-out top-1 on the images the recipe draws here (within
:data:`TOP1_TOLERANCE`: another CPU's rounding may flip an image).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from fat_deploy.common.files import sha256_of
from fat_deploy.environment import cache_root, host_info
from fat_deploy.errors import FatDeployError
from fat_deploy.models import create_model
from fat_deploy.models.checkpoint import apply_state_dict, load_state_dict
from fat_deploy.testbed.recipe import (
    CHECKPOINT,
    CLASSES,
    EPOCHS,
    MODEL,
    TRAIN_THREADS,
    float_top1,
    held_out_and_calibration,
    photos,
    recipe_digest,
    torch_threads,
    train,
)

SHIPPED = Path(__file__).resolve().parents[2] / "testbed" / CHECKPOINT  # in a source checkout of the repository
TOP1_TOLERANCE = 0.5  # points (2-3 of the 544 held-out images)


class TestBedError(FatDeployError):
    """Shipped weights that are not what the recipe trained, or are damaged."""

    __test__ = False  # a name pytest would otherwise try to collect


@dataclass(frozen=True)
class TestBed:
    __test__ = False  # a name pytest would otherwise try to collect

    folder: Path
    checkpoint: Path
    eval_dir: Path
    calibration_dir: Path
    labels: Path
    record: dict[str, object]


def record_path(weights: Path) -> Path:
    """The record of the run that trained ``weights``: the same name, ``.json``."""
    return weights.with_suffix(".json")


def read_record(weights: Path, copy: Path | None = None) -> dict[str, object]:
    """The training record of ``weights``, checked against this code's recipe and the bytes of ``copy`` (the file
    that will be used, where it was copied first) or of ``weights``."""
    try:
        record = json.loads(record_path(weights).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise TestBedError(f"{record_path(weights)}: no readable training record ({error})") from None
    if not isinstance(record, dict):
        raise TestBedError(f"{record_path(weights)}: not a training record (a JSON object)")
    if record.get("recipe") != recipe_digest():
        raise TestBedError(
            f"{weights} was trained by recipe {record.get('recipe')}, this code's recipe is {recipe_digest()}: "
            f"retrain (python -m fat_deploy.testbed --train --save-weights {weights.parent}) or use --train")
    if record.get("epochs") != EPOCHS:
        raise TestBedError(f"{weights} was trained for {record.get('epochs')} epochs, the recipe's {EPOCHS}: retrain "
                           f"(python -m fat_deploy.testbed --train --save-weights {weights.parent}) or use --train")
    if record.get("sha256") != sha256_of(copy or weights):
        raise TestBedError(f"{weights}: its SHA-256 is not the one its record gives (a damaged or replaced file)")
    return record


def write(folder: Path, weights: Path | None, epochs: int, log: bool) -> None:
    """Fill ``folder``: the weights (checked, or trained), labels, held-out and calibration images, the record."""
    if weights is None:
        trained = train(epochs, log)
        save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, str(folder / CHECKPOINT))
        held_out, calibration = trained.held_out, trained.calibration
        record: dict[str, object] = {**trained.record, "weights": "trained in this build", "host": host_info()}
    else:
        shutil.copyfile(weights, folder / CHECKPOINT)  # checked and loaded as copied: what the cache keeps
        training = read_record(weights, folder / CHECKPOINT)
        model = create_model(MODEL, num_classes=len(CLASSES))
        apply_state_dict(model, load_state_dict(folder / CHECKPOINT), MODEL, str(weights))  # CheckpointError: what differs
        held_out, calibration = held_out_and_calibration(photos())
        with torch_threads(TRAIN_THREADS):
            top1 = float_top1(model, held_out)
        recorded = training.get("float_top1_pytorch")
        if not isinstance(recorded, float | int) or abs(top1 - recorded) > TOP1_TOLERANCE:
            raise TestBedError(f"{weights}: {top1}% held-out top-1 here, its record says {recorded}%: not the "
                               f"weights the recipe trained, or the model code changed since")
        record = {**training, "weights": f"shipped: testbed/{weights.name}", "float_top1_pytorch": top1,
                  "trained_float_top1_pytorch": recorded, "trained_on": training.get("host"), "host": host_info()}
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in CLASSES), encoding="utf-8")
    save_images(folder, held_out, calibration)
    (folder / "testbed.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def save_images(folder: Path, held_out: tuple[np.ndarray, np.ndarray], calibration: np.ndarray) -> None:
    """``eval/<class>/NNNN.png`` (held out, for ``--eval-dir``) and ``calibration/NNNN.png``."""
    pictures, labels = held_out
    for index, (picture, label) in enumerate(zip(pictures, labels)):
        target = folder / "eval" / CLASSES[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target / f"{index:04d}.png")
    (folder / "calibration").mkdir()
    for index, picture in enumerate(calibration):
        Image.fromarray(picture).save(folder / "calibration" / f"{index:04d}.png")


def save_weights(bed: TestBed, folder: Path, force: bool = False) -> Path:
    """Copy a trained bed's weights and their record to ``folder`` (the repository's ``testbed/``). ``force``
    replaces only a pair this tool wrote (a record whose SHA-256 is the weights'); each file lands whole."""
    target, record = folder / CHECKPOINT, record_path(folder / CHECKPOINT)
    if not str(bed.record.get("weights", "")).startswith("trained"):
        raise TestBedError("only weights trained in this build are saved (use --train)")
    if target.exists() or record.exists():
        if not force:
            raise TestBedError(f"{target} exists: pass --force to replace it")
        if not written_by_testbed(target):
            raise TestBedError(f"{target} and {record.name} are not a pair this tool wrote: not replaced")
    folder.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in bed.record.items() if k != "weights"}
    text = json.dumps({**fields, "torch": torch.__version__, "sha256": sha256_of(bed.checkpoint)}, indent=2,
                      default=str) + "\n"
    with tempfile.TemporaryDirectory(prefix=".testbed-", dir=folder) as staging:
        shutil.copyfile(bed.checkpoint, Path(staging) / target.name)
        (Path(staging) / record.name).write_text(text, encoding="utf-8")
        os.replace(Path(staging) / target.name, target)
        os.replace(Path(staging) / record.name, record)
    return target


def written_by_testbed(weights: Path) -> bool:
    """Whether ``weights`` and the record beside it are a pair :func:`save_weights` wrote."""
    try:
        record = json.loads(record_path(weights).read_text(encoding="utf-8"))
        return isinstance(record, dict) and weights.is_file() and record.get("sha256") == sha256_of(weights)
    except (OSError, json.JSONDecodeError):
        return False


def cache_key(weights: Path | None, epochs: int) -> str:
    """The folder's name: the code that builds it, torch's version, and the weights (their SHA-256) or the epochs."""
    source = b"".join(Path(module).read_bytes() for module in (__file__, Path(__file__).with_name("recipe.py")))
    what = f"weights {sha256_of(weights)}" if weights is not None else f"trained {epochs}"
    return hashlib.sha256(source + f"{torch.__version__} {what}".encode()).hexdigest()[:16]


def default_cache() -> Path:
    return cache_root() / "testbed"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build(cache: Path | None = None, weights: Path | None = None, train_anew: bool = False, epochs: int = EPOCHS,
          log: bool = False) -> TestBed:
    """The test bed from ``weights`` (default: the repository's shipped file where there is one) or, with
    ``train_anew`` or no weights, trained (minutes); cached, and a finished folder is never rewritten."""
    if train_anew:
        weights = None
    elif weights is None:
        weights = SHIPPED if SHIPPED.is_file() else None
    elif not weights.is_file():
        raise TestBedError(f"{weights}: no such file")
    folder = (cache or default_cache()) / cache_key(weights, epochs)
    with _locked(folder.with_suffix(".lock")):
        if not (folder / "testbed.json").is_file():
            staging = Path(tempfile.mkdtemp(prefix=".testbed-", dir=folder.parent))
            try:
                write(staging, weights, epochs, log)
                shutil.rmtree(folder, ignore_errors=True)  # an unfinished folder from a killed run
                staging.rename(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return TestBed(folder, folder / CHECKPOINT, folder / "eval", folder / "calibration", folder / "labels.txt",
                   json.loads((folder / "testbed.json").read_text(encoding="utf-8")))
