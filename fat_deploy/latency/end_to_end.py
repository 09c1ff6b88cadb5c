"""Image to label (``fat-latency --end-to-end``): what an app pays per photo, stage by stage.

On JPEG files of the shipped sample photos (encoded in memory at quality 90), each stage is timed per image and the
median over images and repeats reported:

* a plain file (the backend's own): decode (Pillow, EXIF orientation applied), preprocess (the documented resize,
  crop and normalisation: :func:`fat_deploy.common.calibration.preprocess`), inference (the runner fat-latency
  timed), postprocess (softmax and top 5);
* the format's app-ready form where it has one (``ExportFormat.app_option``: ``--mediapipe``, ``--image-bytes``):
  what the app does before the call (``decode``), then the call itself, which preprocesses and postprocesses inside.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from fat_deploy.common.calibration import preprocess, sample_photos
from fat_deploy.contract.formats import AppClassifier
from fat_deploy.contract.session import Runner
from fat_deploy.models.spec import ModelSpec

JPEG_QUALITY = 90


@dataclass(frozen=True)
class EndToEnd:
    """Median ms per stage (in order) over ``images`` photos x repeats, for one file form."""

    form: str
    client: str
    stages: dict[str, float]
    images: int
    inside: str = ""  # what the last stage does itself (app forms)

    @property
    def total_ms(self) -> float:
        return sum(self.stages.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; the stages as a list, in order (records are written with sorted keys)."""
        total = self.total_ms
        stages = [{"stage": stage, "ms": round(ms, 3), "share": round(ms / total, 3) if total else None}
                  for stage, ms in self.stages.items()]
        return {**asdict(self), "stages": stages, "total_ms": round(total, 3)}


def encoded_photos() -> list[bytes]:
    """The sample photos as JPEG files, in memory."""
    files = []
    for _, image in sample_photos():
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        files.append(buffer.getvalue())
    return files


class Stopwatch:
    """Milliseconds per named stage, every time it runs."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.samples.setdefault(name, []).append((time.perf_counter() - started) * 1e3)

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.samples.items()}


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def _top5(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    top: np.ndarray = np.argsort(-probabilities, axis=-1)[..., :5]
    return top


def plain_file(runner: Runner, spec: ModelSpec, size: tuple[int, int], photos: list[bytes], repeats: int,
               client: str) -> EndToEnd:
    """Decode, preprocess, inference and postprocess around the backend's runner (batch 1)."""
    watch = Stopwatch()
    for _ in range(repeats):
        for data in photos:
            with watch.stage("decode"):
                image = _decode(data)
            with watch.stage("preprocess"):
                tensor = runner.prepare(preprocess(image, spec, size)[None])
            with watch.stage("inference"):
                logits = runner.logits(tensor)
            with watch.stage("postprocess"):
                _top5(logits)
    return EndToEnd("plain file", client, watch.medians(), len(photos))


def app_form(classifier: AppClassifier, form: str, photos: list[bytes], repeats: int) -> EndToEnd:
    """The app's own decode, then the app-ready file's call (preprocessing and postprocessing inside)."""
    watch = Stopwatch()
    try:
        classifier.classify(classifier.decode(photos[0]))  # first call: one-time work, not timed
        for _ in range(repeats):
            for data in photos:
                with watch.stage("decode"):
                    decoded = classifier.decode(data)
                with watch.stage("classify"):
                    classifier.classify(decoded)
    finally:
        classifier.close()
    return EndToEnd(form, classifier.client, watch.medians(), len(photos), classifier.inside)
