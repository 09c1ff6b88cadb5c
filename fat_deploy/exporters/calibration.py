"""Images for verification and calibration, preprocessed exactly like inference.

Sources: a folder of the user's images, or the sample photos that scikit-image ships (no
download). Preprocessing follows the model spec: resize so the centre crop covers
``input_size / resize`` of the image (bicubic), centre-crop, scale to [0, 1], normalise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fat_deploy.errors import FatDeployError
from fat_deploy.models.registry import ModelSpec

SAMPLE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
    "hubble_deep_field", "colorwheel", "retina",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class CalibrationError(FatDeployError):
    """Calibration or verification images that cannot be used."""


def sample_photos(limit: int | None = None) -> list[tuple[str, Image.Image]]:
    """Colour photos shipped with scikit-image, as (name, RGB image)."""
    try:
        from skimage import data
    except ImportError:
        return []
    photos = []
    for name in SAMPLE_PHOTOS[:limit]:
        try:
            array = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a photo that needs a download is skipped
            continue
        photos.append((f"skimage:{name}", Image.fromarray(array).convert("RGB")))
    return photos


def folder_images(folder: str | Path, limit: int | None = None) -> list[tuple[str, Image.Image]]:
    """Every readable image in ``folder`` (sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(
            f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    images, unreadable = [], []
    for path in files[:limit]:
        try:
            with Image.open(path) as image:
                images.append((str(path), image.convert("RGB")))
        except OSError:
            unreadable.append(path.name)
    if not images:
        raise CalibrationError(f"none of the {len(files)} images in {folder} could be read")
    return images


def preprocess(image: Image.Image, spec: ModelSpec, size: tuple[int, int]) -> np.ndarray:
    """One RGB image -> float32 CHW tensor, as the model was evaluated."""
    height, width = size
    crop_fraction = spec.input_size / spec.eval_resize
    scale = max(height / crop_fraction / image.height, width / crop_fraction / image.width)
    resized = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
        Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR,
    )
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    cropped = resized.crop((left, top, left + width, top + height))
    array = np.asarray(cropped, dtype=np.float32) / 255.0
    array = (array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def verification_inputs(
    spec: ModelSpec, size: tuple[int, int], photos: int = 6, random: int = 2, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Real photos plus random-normal inputs, stacked NCHW, with a name for each."""
    named = [(name, preprocess(image, spec, size)) for name, image in sample_photos(photos)]
    rng = np.random.default_rng(seed)
    named += [(f"random-normal:{i}", rng.standard_normal((3, *size)).astype(np.float32))
              for i in range(random)]
    return np.stack([array for _, array in named]), [name for name, _ in named]


def batches(inputs: np.ndarray, batch: int) -> list[np.ndarray]:
    """Split N inputs into full batches of ``batch`` (the remainder is padded by repetition)."""
    groups = []
    for start in range(0, len(inputs), batch):
        group = inputs[start : start + batch]
        if len(group) < batch:
            group = np.concatenate([group, np.repeat(group[-1:], batch - len(group), axis=0)])
        groups.append(group)
    return groups


def unbatch(outputs: Sequence[np.ndarray], count: int) -> np.ndarray:
    return np.concatenate(list(outputs))[:count]
