"""Images for verification and calibration, preprocessed exactly like inference.

Sources: a folder of the user's images, or the sample photos that scikit-image ships (no
download). Preprocessing follows the model spec: resize so the centre crop covers
``input_size / resize`` of the image (bicubic), centre-crop, scale to [0, 1], normalise.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps, UnidentifiedImageError

from fat_deploy.errors import FatDeployError
from fat_deploy.models.spec import ModelSpec

SAMPLE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
    "hubble_deep_field", "colorwheel", "retina",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


log = logging.getLogger(__name__)


class CalibrationError(FatDeployError):
    """Calibration or verification images that cannot be used."""


def sample_photos(limit: int | None = None) -> list[tuple[str, Image.Image]]:
    """Colour photos shipped with scikit-image, as (name, RGB image)."""
    try:
        from skimage import data
    except ImportError:  # a dependency of fat-deploy: verification must never fall back to random inputs only
        raise CalibrationError("scikit-image is missing (its sample photos verify every artifact): "
                               "pip install scikit-image") from None
    photos = []
    for name in SAMPLE_PHOTOS[:limit]:
        try:
            array = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a photo that needs a download is skipped
            continue
        photos.append((f"skimage:{name}", Image.fromarray(array).convert("RGB")))
    return photos


ORIENTATION = ("EXIF orientation applied first: the picture upright, as a photo viewer shows it (phone cameras store "
               "many photos sideways with an orientation tag)")
MAX_IMAGE_PIXELS = 100_000_000  # larger images are refused: one decoded copy is 300 MB of RGB
GREY_16_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(path: Path) -> Image.Image:
    """One image file as an app shows it, in RGB: EXIF orientation applied (a phone photo stored sideways is turned
    upright, as browsers and photo viewers show it), 16-bit grey scaled to 8 bits (``convert("RGB")`` would clip
    it). Refused in one line: more than :data:`MAX_IMAGE_PIXELS`, several frames (animated, multi-page), pixels
    of unknown range (32-bit integer or float)."""
    with Image.open(path) as image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise CalibrationError(f"{path}: {image.width} x {image.height} px is more than {MAX_IMAGE_PIXELS // 10**6} "
                                   "megapixels; downscale it first")
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise CalibrationError(f"{path}: {frames} frames (animated or multi-page); save the frame to use as a "
                                   "single image")
        if image.mode in ("I", "F"):
            raise CalibrationError(f"{path}: {'32-bit integer' if image.mode == 'I' else 'floating-point'} pixels "
                                   "have no known range; save it as an 8- or 16-bit image")
        upright = ImageOps.exif_transpose(image)
        if upright.mode in GREY_16_BIT:
            grey = np.asarray(upright).astype(np.float32) * (255.0 / 65535.0)
            return Image.fromarray(np.round(grey).astype(np.uint8), "L").convert("RGB")
        return upright.convert("RGB")


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; other files are named in a warning, never skipped
    silently (hidden files such as ``.DS_Store`` excepted)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CalibrationError(f"{folder} is a file; give a folder of images")
    if not folder.is_dir():
        raise CalibrationError(f"image folder not found: {folder}")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]
    others = Counter(p.suffix.lower() or "(no suffix)" for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES
                     and not p.is_dir())
    folders = sum(p.is_dir() for p in entries)
    if not files:
        inside = f"; it has {folders} subfolder(s), which are not read" if folders else ""
        raise CalibrationError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}){inside}")
    if others:
        log.warning("%s: %d file(s) not read, their type is not one fat-deploy reads (%s): %s", folder,
                    sum(others.values()), ", ".join(sorted(IMAGE_SUFFIXES)),
                    ", ".join(f"{suffix} x{count}" for suffix, count in sorted(others.items())))
    return files


def folder_images(folder: str | Path, limit: int | None = None) -> Iterator[tuple[str, Image.Image]]:
    """The readable images in ``folder`` (sorted by name, at most ``limit``), decoded one at a time so memory does
    not grow with their number; after the last, one error naming every image that could not be read."""
    files = image_files(folder)[:limit]
    unreadable = []
    for path in files:
        try:
            image = read_image(path)
        except CalibrationError as error:
            unreadable.append(f"{path.name} ({str(error).removeprefix(f'{path}: ')})")
            continue
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            reason = ("not an image PIL can decode" if isinstance(error, UnidentifiedImageError)
                      else getattr(error, "strerror", None) or " ".join(str(error).split())[:120]
                      or type(error).__name__)
            unreadable.append(f"{path.name} ({reason})")
            continue
        yield f"{Path(folder).name}/{path.name}", image  # no host path: names go into manifests that ship
    if unreadable:  # never skipped silently: the user's data set is not what they think it is
        shown = "; ".join(unreadable[:3]) + (f"; +{len(unreadable) - 3} more" if len(unreadable) > 3 else "")
        raise CalibrationError(f"{len(unreadable)} of {len(files)} images in {folder} cannot be read: {shown}")


def resize_contract(spec: ModelSpec, size: tuple[int, int]) -> dict[str, object]:
    """The resize that :func:`preprocess` applies before its centre crop, for any input size (manifest)."""
    height, width = size
    crop_fraction = spec.input_size / spec.eval_resize
    contract: dict[str, object] = {"crop_fraction": round(crop_fraction, 6)}
    if height == width:  # timm's eval transform: Resize(floor(size / crop_pct)) then CenterCrop(size)
        shorter = max(height, math.floor(height / crop_fraction))
        contract["resize_shorter_side"] = shorter
        contract["resize"] = (f"resize the shorter side to {shorter} px (the longer side by the same factor, "
                              f"truncated to whole pixels), then centre-crop {height} x {width}")
    else:
        contract["resize"] = (f"scale the image, keeping its aspect ratio, to the smallest size that covers "
                              f"{height / crop_fraction:.1f} x {width / crop_fraction:.1f} (H x W) px, then "
                              f"centre-crop {height} x {width}")
    return contract


def preprocess(image: Image.Image, spec: ModelSpec, size: tuple[int, int]) -> np.ndarray:
    """One RGB image -> float32 CHW tensor, as the model was evaluated (see :func:`resize_contract`)."""
    height, width = size
    contract = resize_contract(spec, size)
    if "resize_shorter_side" in contract:
        shorter = int(contract["resize_shorter_side"])  # type: ignore[call-overload]
        if image.width <= image.height:
            new_size = (shorter, int(shorter * image.height / image.width))
        else:
            new_size = (int(shorter * image.width / image.height), shorter)
    else:
        crop_fraction = spec.input_size / spec.eval_resize
        scale = max(height / crop_fraction / image.height, width / crop_fraction / image.width)
        new_size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resized = image.resize(
        new_size, Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    cropped = resized.crop((left, top, left + width, top + height))
    array = np.asarray(cropped, dtype=np.float32) / 255.0
    array = ((array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)).astype(np.float32)
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
    joined: np.ndarray = np.concatenate(list(outputs))[:count]
    return joined


DEFAULT_CALIBRATION_SIZE = 32


def requested_size(options: dict[str, object]) -> int:
    """--calibration-size, or the default when it was not given (0 and negatives are refused up front)."""
    size = options.get("calibration_size")
    return DEFAULT_CALIBRATION_SIZE if size is None else int(size)  # type: ignore[call-overload]


CALIBRATION_PHOTOS = 4  # the first photos calibrate by default; the rest stay held out
MIN_CALIBRATION_IMAGES = 4


def _random_crops(image: Image.Image, count: int, rng: np.random.Generator) -> list[Image.Image]:
    crops = []
    for _ in range(count):
        side = int(min(image.size) * rng.uniform(0.4, 1.0))
        left = int(rng.integers(0, image.width - side + 1))
        top = int(rng.integers(0, image.height - side + 1))
        crop = image.crop((left, top, left + side, top + side))
        crops.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return crops


def _for_crops(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A copy small enough to keep for later random crops: a phone photo's shorter side brought down by a whole factor
    to no less than 512 px (or twice the input size); small images such as the shipped sample photos are kept as
    they are."""
    factor = min(image.size) // max(2 * max(size), 512)
    return image.reduce(factor) if factor > 1 else image


def calibration_batch(
    spec: ModelSpec, size: tuple[int, int], folder: str | Path | None = None, count: int = 32, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``count`` preprocessed calibration inputs (NCHW) and the images they came from.

    From ``folder`` when given (its first ``count`` images, then random crops of them up to ``count``, decoded one
    at a time); otherwise random crops of the first shipped sample photos, which verification then never uses.
    """
    if count < 1:
        raise CalibrationError(f"--calibration-size must be at least 1, got {count}")
    images = folder_images(folder, limit=count) if folder else iter(sample_photos()[:CALIBRATION_PHOTOS])
    samples, kept, names = [], [], []
    for name, image in images:
        samples.append(preprocess(image, spec, size))
        kept.append(_for_crops(image, size))
        names.append(name)
    if not kept:
        raise CalibrationError("no calibration images: pass --calibration DIR (scikit-image is not installed)")
    rng = np.random.default_rng(seed)
    while len(samples) < count:
        samples += [preprocess(crop, spec, size) for crop in _random_crops(kept[len(samples) % len(kept)], 1, rng)]
    return np.stack(samples), names


def held_out_inputs(
    spec: ModelSpec, size: tuple[int, int], calibrated_on: list[str], random: int = 2, seed: int = 1
) -> tuple[np.ndarray, list[str]]:
    """Evaluation inputs that share no image with the calibration set: photos and their crops."""
    rng = np.random.default_rng(seed)
    named: list[tuple[str, np.ndarray]] = []
    for name, image in sample_photos():
        if name in calibrated_on:
            continue
        named.append((name, preprocess(image, spec, size)))
        named += [(f"{name}:crop{i}", preprocess(crop, spec, size))
                  for i, crop in enumerate(_random_crops(image, 3, rng))]
    named += [(f"random-normal:{i}", rng.standard_normal((3, *size)).astype(np.float32)) for i in range(random)]
    return np.stack([array for _, array in named]), [name for name, _ in named]


def recalibrate_batchnorm(model: nn.Module, spec: ModelSpec, size: tuple[int, int], crops_per_photo: int = 4,
                          seed: int = 5) -> nn.Module:
    """Re-estimate every BatchNorm's statistics on the shipped photos (random crops), in place.

    Random-init weights with photo statistics behave more like trained ones under quantization than raw
    init (whose activations are far from the data's); used by tests and benchmarks, never on a user's model.
    """
    rng = np.random.default_rng(seed)
    crops = [preprocess(c, spec, size) for _, photo in sample_photos() for c in _random_crops(photo, crops_per_photo, rng)]
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over all batches
    model.train()
    with torch.no_grad():
        for batch in torch.split(torch.from_numpy(np.stack(crops)), 8):
            model(batch)
    return model.eval()
