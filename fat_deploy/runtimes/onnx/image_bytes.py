"""``--image-bytes``: an ONNX classifier that takes the bytes of a JPEG or PNG file and returns probabilities.

Built with onnxruntime-extensions' pre/post-processing tools
(https://github.com/microsoft/onnxruntime-extensions/tree/main/onnxruntime_extensions/tools/pre_post_processing):
decode (``DecodeImage``), BGR -> RGB, resize keeping the aspect ratio so the shorter side is the model's eval
resize (ONNX Resize, bilinear with antialiasing), centre crop, HWC -> CHW, /255, mean/std, batch axis; softmax
after the model. It runs in onnxruntime with the extensions' custom-op library registered.

The tensor between pre-processing and model keeps a name (:data:`PREPROCESSED`), so the check can read what the
graph fed the model and compare with PyTorch on exactly that image, and verification can run the model part.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.common.calibration import resize_contract
from fat_deploy.common.verify import is_tie
from fat_deploy.contract.formats import ExportRequest

PREPROCESSED = "preprocessed_image"  # NCHW float32, normalised: what the model part takes
BYTES_INPUT, PROBABILITIES = "image", "probabilities"
TOP_K = 5
ENCODINGS = ("JPEG", "PNG")
EXIF_ORIENTATION = 0x0112


def shorter_side(request: ExportRequest) -> int:
    """The shorter side the image is resized to before the centre crop (the manifest's resize contract)."""

    contract = resize_contract(request.spec, request.img_size)
    if "resize_shorter_side" not in contract:
        raise ValueError("--image-bytes needs a square --img-size (the resize step keeps one shorter side)")
    return int(str(contract["resize_shorter_side"]))


def add_image_bytes(model: Any, request: ExportRequest, input_name: str) -> Any:
    """``model`` (NCHW normalised float input ``input_name``, logits out) wrapped into bytes -> probabilities."""
    import onnx
    from onnxruntime_extensions.tools.pre_post_processing import (
        CenterCrop,
        ChannelsLastToChannelsFirst,
        ConvertImageToBGR,
        ImageBytesToFloat,
        Normalize,
        PrePostProcessor,
        Resize,
        ReverseAxis,
        Softmax,
        Unsqueeze,
        create_named_value,
    )

    _name_model_input(model, input_name)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    height, width = request.img_size
    processor = PrePostProcessor([create_named_value(BYTES_INPUT, onnx.TensorProto.UINT8, ["num_bytes"])], opset)
    processor.add_pre_processing([
        ConvertImageToBGR(), ReverseAxis(axis=2, dim_value=3, name="BGRToRGB"),
        Resize(shorter_side(request)), CenterCrop(height, width), ChannelsLastToChannelsFirst(),
        ImageBytesToFloat(), Normalize(list(zip(request.spec.mean, request.spec.std, strict=True)), layout="CHW"),
        Unsqueeze([0]),
    ])
    processor.add_post_processing([Softmax()])
    wrapped = processor.run(model)
    wrapped.graph.output[0].name = _rename_output(wrapped.graph, PROBABILITIES)
    return wrapped


def _name_model_input(model: Any, input_name: str) -> None:
    """Route the graph input through ``Identity -> PREPROCESSED``, a name that survives the merge."""
    import onnx

    for node in model.graph.node:
        node.input[:] = [PREPROCESSED if name == input_name else name for name in node.input]
    model.graph.node.insert(0, onnx.helper.make_node("Identity", [input_name], [PREPROCESSED], name="model_input"))


def _rename_output(graph: Any, name: str) -> str:
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [name if out == old else out for out in node.output]
    return name


def session(model: Any, extra_outputs: tuple[str, ...] = ()) -> Any:
    """An onnxruntime CPU session with the extensions' custom ops, on a path or an in-memory model."""
    import onnx
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    options.intra_op_num_threads = 1
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    for name in extra_outputs:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def model_part(path: Path, output_name: str) -> Any:
    """The classifier inside the file, from :data:`PREPROCESSED` to ``output_name`` (logits), as a model."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(path))
    if not any(info.name == PREPROCESSED for info in model.graph.value_info):
        model.graph.value_info.append(onnx.helper.make_tensor_value_info(PREPROCESSED, onnx.TensorProto.FLOAT, None))
    return Extractor(model).extract_model([PREPROCESSED], [output_name])


def encoded_photos(images: list[np.ndarray]) -> list[tuple[str, bytes]]:
    """Each photo as a JPEG and a PNG file's bytes."""
    from PIL import Image

    files = []
    for number, image in enumerate(images):
        for encoding in ENCODINGS:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, encoding)
            files.append((f"photo{number}.{encoding.lower()}", buffer.getvalue()))
    return files


def exif_orientation(runner: Any, image: np.ndarray) -> str:
    """Whether the file's decoder applies a JPEG's EXIF orientation, measured: the photo stored turned a quarter
    with orientation tag 6 ("rotate 90 clockwise to view") against the same bytes' pixels without the tag and
    against the upright photo, compared on the tensor the graph feeds its model (``runner``: a :func:`session`
    with :data:`PREPROCESSED` as an extra output)."""
    from PIL import Image

    def fed(picture: Image.Image, tag: int | None) -> np.ndarray:
        buffer = io.BytesIO()
        exif = Image.Exif()
        if tag is not None:
            exif[EXIF_ORIENTATION] = tag
        picture.save(buffer, "JPEG", quality=95, exif=exif)
        data = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        return np.asarray(runner.run([PREPROCESSED], {BYTES_INPUT: data})[0])

    upright = Image.fromarray(image)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a phone writes for a portrait shot, tag 6
    tagged, untagged, shown = fed(stored, 6), fed(stored, None), fed(upright, None)
    if float(np.abs(tagged - untagged).max()) == 0.0:
        return "ignored: the decoder reads the pixels as stored; pass upright images (apply EXIF orientation first)"
    if float(np.abs(tagged - shown).mean()) < float(np.abs(untagged - shown).mean()):
        return "applied by the decoder"
    return "changes the result, but not to the upright picture: pass upright images without an orientation tag"


def image_bytes_check(runner: Any, files: list[tuple[str, bytes]], expected_of: Any, tolerance: float) -> dict[str, Any]:
    """Run the file (``runner``: a :func:`session` with :data:`PREPROCESSED` as an extra output) on each encoded
    image; ``expected_of(preprocessed)`` gives the reference probabilities for the tensor the graph fed its model.
    Top-5 must match (see :func:`is_tie`) and scores agree within ``tolerance``."""
    failures, worst = [], 0.0
    for name, data in files:
        probabilities, preprocessed = runner.run([PROBABILITIES, PREPROCESSED],
                                                 {BYTES_INPUT: np.frombuffer(data, dtype=np.uint8)})
        found, expected = probabilities[0], expected_of(preprocessed)[0]
        error = float(np.abs(found - expected).max())
        worst = max(worst, error)
        for rank, (got, wanted) in enumerate(zip(np.argsort(-found, kind="stable")[:TOP_K],
                                                 np.argsort(-expected, kind="stable")[:TOP_K], strict=True)):
            if got != wanted and not is_tie(float(expected[got]), float(expected[wanted]), error):
                failures.append(f"{name} rank {rank + 1}: class {int(got)}, expected {int(wanted)}")
    if worst > tolerance:
        failures.append(f"probabilities differ by up to {worst:.2e} (tolerance {tolerance:.0e})")
    return {"runtime": "onnxruntime + onnxruntime-extensions", "files": [name for name, _ in files], "top_k": TOP_K,
            "max_probability_diff": worst, "tolerance": tolerance, "passed": not failures, "failures": failures[:5]}
