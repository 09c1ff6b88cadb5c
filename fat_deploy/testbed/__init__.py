"""A trained FAT-B0 to judge quantization by (``python -m fat_deploy.testbed``): :mod:`.recipe` says what it is and
how it is trained, :mod:`.bed` builds its folder from the repository's shipped weights or a fresh training run."""

from fat_deploy.testbed.bed import SHIPPED, TestBed, TestBedError, build, save_weights
from fat_deploy.testbed.recipe import (
    CHECKPOINT,
    CLASSES,
    EPOCHS,
    GRID,
    IMG_SIZE,
    TRAIN_THREADS,
    patches,
    photos,
    recipe_digest,
    tiles,
    torch_threads,
)

__all__ = ["CHECKPOINT", "CLASSES", "EPOCHS", "GRID", "IMG_SIZE", "SHIPPED", "TRAIN_THREADS", "TestBed", "TestBedError",
           "build", "patches", "photos", "recipe_digest", "save_weights", "tiles", "torch_threads"]
