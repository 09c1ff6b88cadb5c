"""The ``--mediapipe`` form of a TFLite classifier: a file MediaPipe Tasks' ``ImageClassifier`` and the TFLite
Task Library load as it is.

- Graph: NHWC float32 RGB input in [0, 1] (pixel / 255); the model's mean/std normalisation inside the graph,
  since TFLite metadata normalises with one mean/std for all channels only; softmax probabilities out.
- Metadata (https://ai.google.dev/edge/litert/models/metadata): name, version, description, author, licence;
  input image properties and ``NormalizationOptions`` (mean 0, std 255), output score properties with the labels
  file associated as ``TENSOR_AXIS_LABELS``. Written with the flatbuffer classes generated from the metadata
  schema that the mediapipe wheel ships (its metadata writers need native modules the wheel lacks) and with
  LiteRT's generated TFLite schema classes; the labels file is attached as the metadata populator of
  tflite-support does it: a zip archive appended to the model, which stays a valid flatbuffer.
- Checked by the client: :func:`mediapipe_check` classifies images with MediaPipe's ``ImageClassifier``.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps

from fat_deploy.common.labels import labels_text
from fat_deploy.common.verify import is_tie
from fat_deploy.contract.formats import AppClassifier
from fat_deploy.models.deploy import PixelNormalize

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER, MODEL_IDENTIFIER = b"M001", b"TFL3"
MIN_PARSER_VERSION = "1.0.0"  # the fields written here are all in the schema's first version
LABELS_FILE = "labels.txt"
PIXEL_SCALE = 255.0  # NormalizationOptions: (pixel - 0) / 255 -> [0, 1]


class MediaPipeClassifier(nn.Module):
    """NHWC RGB in [0, 1] -> the model's normalisation -> model -> softmax probabilities."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.classifier = PixelNormalize(model, mean, std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(image.permute(0, 3, 1, 2)), dim=-1)


def to_app_input(normalized: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Normalised NCHW float32 images as the app form takes them: NHWC in [0, 1]."""
    pixels = normalized * np.asarray(std, np.float32).reshape(1, 3, 1, 1) + np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1), dtype=np.float32)


@dataclass(frozen=True)
class ClassifierMetadata:
    name: str
    description: str
    version: str
    author: str
    license: str
    labels: list[str]


def metadata_flatbuffer(info: ClassifierMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer of an image classifier (file identifier M001)."""
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    image = schema.TensorMetadataT()
    image.name, image.description = "image", "RGB image, NHWC float32; pixel values / 255 (NormalizationOptions)"
    image.content = schema.ContentT()
    image.content.contentPropertiesType = schema.ContentProperties.ImageProperties
    image.content.contentProperties = schema.ImagePropertiesT()
    image.content.contentProperties.colorSpace = schema.ColorSpaceType.RGB
    normalization = schema.ProcessUnitT()
    normalization.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    normalization.options = schema.NormalizationOptionsT()
    normalization.options.mean, normalization.options.std = [0.0], [PIXEL_SCALE]
    image.processUnits = [normalization]
    image.stats = schema.StatsT()
    image.stats.min, image.stats.max = [0.0], [1.0]

    scores = schema.TensorMetadataT()
    scores.name, scores.description = "probability", f"softmax probabilities of the {len(info.labels)} classes"
    scores.content = schema.ContentT()
    scores.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    scores.content.contentProperties = schema.FeaturePropertiesT()
    scores.stats = schema.StatsT()
    scores.stats.min, scores.stats.max = [0.0], [1.0]
    labels = schema.AssociatedFileT()
    labels.name, labels.description = LABELS_FILE, "class names, one per line, in class-index order"
    labels.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [labels]

    graph = schema.SubGraphMetadataT()
    graph.inputTensorMetadata, graph.outputTensorMetadata = [image], [scores]
    model = schema.ModelMetadataT()
    model.name, model.description, model.version = info.name, info.description, info.version
    model.author, model.license = info.author, info.license
    model.subgraphMetadata = [graph]
    model.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def attach_metadata(path: Path, info: ClassifierMetadata) -> None:
    """Rewrite the .tflite at ``path`` with ``info`` as its metadata and the labels file appended."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tflite

    raw = path.read_bytes()
    model = tflite.ModelT.InitFromPackedBuf(raw, 0)
    for stored in model.buffers:  # data kept after the flatbuffer (offset/size, as ai-edge-quantizer writes it)
        if stored.offset > 1:  # moves inline: re-packing would leave the offsets pointing past the new end
            stored.data = np.frombuffer(raw, dtype=np.uint8, count=stored.size, offset=stored.offset)
            stored.offset = stored.size = 0
    buffer = tflite.BufferT()
    buffer.data = np.frombuffer(metadata_flatbuffer(info), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = tflite.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())] + [entry]
    builder = flatbuffers.Builder(path.stat().st_size + 65536)
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    payload = io.BytesIO(bytes(builder.Output()))
    with zipfile.ZipFile(payload, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, labels_text(info.labels))
    path.write_bytes(payload.getvalue())


def read_metadata(path: Path) -> dict[str, Any]:
    """What an app framework reads back: model fields, input normalisation, associated files, the labels."""
    from ai_edge_litert import schema_py_generated as tflite
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    data = path.read_bytes()
    model = tflite.Model.GetRootAsModel(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    if METADATA_NAME not in entries:
        return {}
    raw = model.Buffers(entries[METADATA_NAME]).DataAsNumpy().tobytes()
    if not schema.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0):
        return {"error": "metadata buffer lacks the M001 identifier"}
    meta = schema.ModelMetadataT.InitFromPackedBuf(raw, 0)
    (graph,) = meta.subgraphMetadata
    (image,), (scores,) = graph.inputTensorMetadata, graph.outputTensorMetadata
    (unit,) = image.processUnits
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name).decode("utf-8") for name in archive.namelist()}
    def text(value: object) -> object:
        return value.decode() if isinstance(value, bytes) else value
    return {
        "name": text(meta.name), "version": text(meta.version), "author": text(meta.author),
        "license": text(meta.license), "description": text(meta.description),
        "min_parser_version": text(meta.minParserVersion),
        "input_normalization": {"mean": [float(v) for v in unit.options.mean],
                                "std": [float(v) for v in unit.options.std]},
        "output_associated_files": [text(f.name) for f in scores.associatedFiles],
        "labels": files.get(LABELS_FILE, "").splitlines(),
    }


def mediapipe_classify(path: Path, images: np.ndarray, top_k: int) -> list[list[tuple[int, float]]]:
    """(class index, score) of the top ``top_k`` classes, per uint8 NHWC RGB image, from MediaPipe's
    ``ImageClassifier`` (the Python build of the Tasks API apps use), loading ``path`` as it is."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=top_k)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        results = []
        for image in images:
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            results.append([(c.index, c.score) for c in result.classifications[0].categories])
    return results


def mediapipe_classifier(path: Path) -> AppClassifier:
    """MediaPipe's ``ImageClassifier`` on the --mediapipe file at ``path``, as an app calls it: the app decodes the
    image (here with Pillow, EXIF orientation applied) into an ``mp.Image``; the classifier does the rest."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=5)
    classifier = vision.ImageClassifier.create_from_options(options)

    def decode(data: bytes) -> Any:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))

    def classify(image: Any) -> np.ndarray:
        categories = classifier.classify(image).classifications[0].categories
        return np.array([(c.index, c.score) for c in categories], dtype=np.float32)

    return AppClassifier(client=f"MediaPipe ImageClassifier {version('mediapipe')}", decode=decode, classify=classify,
                         inside="resize and crop (region of interest), normalise, inference, softmax, top 5",
                         close=classifier.close)


def mediapipe_check(path: Path, images: np.ndarray, expected: np.ndarray, tolerance: float,
                    top_k: int = 5) -> dict[str, Any]:
    """MediaPipe's top-k on uint8 images against ``expected`` probabilities (same images, same file or model).

    A rank passes when MediaPipe names the expected class, or one tied with it within the measured score error
    (:func:`~fat_deploy.common.verify.is_tie`); every score must be within ``tolerance``.
    """

    failures, worst = [], 0.0
    for number, (found, probs) in enumerate(zip(mediapipe_classify(path, images, top_k), expected, strict=True)):
        order = np.argsort(-probs, kind="stable")[:top_k]
        if len(found) != top_k:
            failures.append(f"image {number}: {len(found)} categories, expected {top_k}")
            continue
        error = max(abs(score - float(probs[index])) for index, score in found)
        worst = max(worst, error)
        for rank, ((index, _), wanted) in enumerate(zip(found, order, strict=True)):
            if index != wanted and not is_tie(float(probs[index]), float(probs[wanted]), error):
                failures.append(f"image {number} rank {rank + 1}: class {index}, expected {int(wanted)}")
    if worst > tolerance:
        failures.append(f"scores differ by up to {worst:.2e} (tolerance {tolerance:.0e})")

    return {"client": "mediapipe.tasks ImageClassifier", "version": version("mediapipe"), "images": len(images),
            "top_k": top_k,
            "max_score_diff": worst, "tolerance": tolerance, "passed": not failures, "failures": failures[:5]}
