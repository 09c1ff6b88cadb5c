"""Files an app loads as they are: the MediaPipe-ready .tflite, the image-bytes ONNX, the per-platform bundle.

Each app form is checked by the client apps use (MediaPipe's ImageClassifier; onnxruntime with the extensions'
custom ops) against a PyTorch computation written here, independently of the export's own check.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fat_deploy.cli.export import main
from fat_deploy.common.calibration import sample_photos
from fat_deploy.common.labels import default_labels, read_labels
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export
from fat_deploy.exporters.bundle import INDEX, check_bundle_target
from fat_deploy.exporters.placement import PlacementError
from fat_deploy.models import create_model, get_spec
from fat_deploy.runtimes.ort_mobile.converter import merge_operator_configs

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def top5(scores: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-scores, kind="stable")[:5]]


def torch_probabilities(checkpoint: Path, pixels: np.ndarray) -> np.ndarray:
    """softmax(FAT-B0((pixels / 255 - mean) / std)) for one uint8 HWC image, written out here."""
    model = create_model("fat_b0", checkpoint=checkpoint).eval()
    x = (pixels.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())), dim=-1).numpy()[0]


def centre_square(image: Image.Image, side: int) -> np.ndarray:
    """The photo's centre square, resized to ``side`` px: a fixed image both sides see exactly."""
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    return np.asarray(image.convert("RGB").crop((left, top, left + short, top + short)).resize((side, side)))


def test_app_options_are_refused_where_they_cannot_apply(tmp_path: Path) -> None:
    with pytest.raises(FatDeployError, match="--mediapipe keeps float32 input/output"):
        export("fat_b0", "tflite", "int8-static", out=tmp_path, mediapipe=True, int8_io=True)
    with pytest.raises(FatDeployError, match="--image-bytes takes one encoded image"):
        export("fat_b0", "onnx", out=tmp_path, image_bytes=True, dynamic_batch=True)
    with pytest.raises(FatDeployError, match="ORT Mobile's prebuilt packages lack"):
        export("fat_b0", "ort", out=tmp_path, image_bytes=True)
    with pytest.raises(FatDeployError, match="--mediapipe is not supported for onnx"):
        export("fat_b0", "onnx", out=tmp_path, mediapipe=True)
    with pytest.raises(FatDeployError, match="--image-bytes takes one encoded image; leave --batch out"):
        export("fat_b0", "onnx", out=tmp_path, image_bytes=True, img_size=64, batch=2)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_default_labels_are_imagenet_names_or_indices() -> None:
    names, source = default_labels(1000)
    assert names[0] == "tench, Tinca tinca" and len(names) == 1000 and "ImageNet" in source
    assert (names[134], names[517]) == ("crane (n02012849)", "crane (n03126707)")  # ImageNet's two "crane"s
    assert len(set(names)) == 1000
    assert default_labels(3) == (["0", "1", "2"], "class indices (no --labels given)")


def test_operator_configs_of_several_ort_files_merge_into_one() -> None:
    merged = merge_operator_configs("# - a.ort\nai.onnx;20;Add,Conv\n", "# - b.ort\nai.onnx;20;Conv,Gemm\nai.onnx;17;Relu\n")
    assert merged.splitlines() == ["# - a.ort", "# - b.ort", "ai.onnx;17;Relu", "ai.onnx;20;Add,Conv,Gemm"]


def test_bundle_target_rules(tmp_path: Path) -> None:
    check_bundle_target(tmp_path / "new", force=False)
    (tmp_path / "empty").mkdir()
    check_bundle_target(tmp_path / "empty", force=False)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(PlacementError, match="files that fat-export did not write"):
        check_bundle_target(user, force=True)
    previous = tmp_path / "previous"  # what write_bundle_files leaves: the index lists every file
    (previous / "web").mkdir(parents=True)
    for name in ("fat_b0_onnx_fp32.onnx", "fat_b0_onnx_fp32.json", "labels.txt", "README.md"):
        (previous / "web" / name).write_text("x")
    (previous / INDEX).write_text(json.dumps({"made_by": "fat-deploy 0.1.0", "platforms": {"web": {
        "files": sorted(p.name for p in (previous / "web").iterdir())}}}))
    with pytest.raises(PlacementError, match="--force replaces it"):
        check_bundle_target(previous, force=False)
    check_bundle_target(previous, force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(PlacementError, match="something other than a folder"):
        check_bundle_target(tmp_path / "file", force=True)


def test_force_never_deletes_a_folder_fat_export_did_not_write(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    web = tmp_path / "web"  # a web app that happens to have a bundle.json of its own
    (web / "src").mkdir(parents=True)
    (web / INDEX).write_text('{"name": "my-web-app"}')
    (web / "precious.txt").write_text("mine")
    assert main(["--model", "fat_b0", "--format", "onnx", "--img-size", "64", "--bundle", str(web), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds files that fat-export did not write (bundle.json, precious.txt, src)" in err
    assert (web / "precious.txt").read_text() == "mine" and (web / "src").is_dir()
    ours = tmp_path / "ours"  # a real bundle index, with a user's files added to it
    (ours / "web").mkdir(parents=True)
    (ours / "web" / "labels.txt").write_text("x")
    (ours / "web" / "notes.md").write_text("mine")
    (ours / "extra").mkdir()
    (ours / INDEX).write_text(json.dumps({"made_by": "fat-deploy 0.1.0", "platforms": {"web": {"files": ["labels.txt"]}}}))
    with pytest.raises(PlacementError, match=r"did not write \(extra, web/notes.md\)"):
        check_bundle_target(ours, force=True)


@pytest.mark.slow
def test_mediapipe_tflite_is_classified_by_mediapipe_like_pytorch(tmp_path: Path, trained_looking_checkpoint: Path) -> None:
    from fat_deploy.runtimes.tflite.app_form import mediapipe_classify, read_metadata

    artifact = export("fat_b0", "tflite", out=tmp_path, checkpoint=trained_looking_checkpoint, mediapipe=True)
    assert artifact.status == "passed", artifact.error
    assert artifact.path is not None and artifact.path.name == "fat_b0_tflite_fp32_mediapipe.tflite"
    metadata = read_metadata(artifact.path)
    assert metadata["input_normalization"] == {"mean": [0.0], "std": [255.0]}
    assert metadata["labels"] == default_labels(1000)[0] and metadata["output_associated_files"] == ["labels.txt"]
    assert metadata["name"] == "fat_b0" and metadata["author"] and metadata["license"]
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    assert manifest["input"]["shape"] == [1, 224, 224, 3] and "probabilities" in manifest["output"]["meaning"]
    assert manifest["format_details"]["mediapipe"]["passed"]
    # Independently of the export's check: a photo MediaPipe does not need to resize, and PyTorch on the same pixels.
    photos = [centre_square(image, 224) for _, image in sample_photos(3)]
    found = mediapipe_classify(artifact.path, np.stack(photos), top_k=5)
    for pixels, categories in zip(photos, found, strict=True):
        expected = torch_probabilities(trained_looking_checkpoint, pixels)
        assert [index for index, _ in categories] == top5(expected)
        assert max(abs(score - expected[index]) for index, score in categories) < 1e-4


@pytest.mark.slow
def test_image_bytes_onnx_takes_png_and_jpeg_files(tmp_path: Path, trained_looking_checkpoint: Path) -> None:
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    artifact = export("fat_b0", "onnx", out=tmp_path, checkpoint=trained_looking_checkpoint, image_bytes=True)
    assert artifact.status == "passed", artifact.error
    assert artifact.path is not None and artifact.path.name == "fat_b0_onnx_fp32_image-bytes.onnx"
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    check = manifest["format_details"]["image_bytes"]
    assert check["passed"] and {name.rsplit(".")[-1] for name in check["files"]} == {"jpeg", "png"}
    # Measured at export (a photo stored sideways with tag 6): onnxruntime-extensions' decoder ignores the tag.
    assert check["exif_orientation"].startswith("ignored: ") and "EXIF orientation: ignored" in " ".join(artifact.notes)
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    session = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["labels"]) == default_labels(1000)[0]
    # A 256 x 256 PNG: the graph's resize keeps it, its centre crop is the PyTorch input (lossless, exact).
    for _, image in sample_photos(2):
        square = centre_square(image, 256)
        encoded = io.BytesIO()
        Image.fromarray(square).save(encoded, "PNG")
        (probabilities,) = session.run(None, {"image": np.frombuffer(encoded.getvalue(), np.uint8)})
        expected = torch_probabilities(trained_looking_checkpoint, square[16:240, 16:240])
        assert top5(probabilities[0]) == top5(expected)
        assert np.abs(probabilities[0] - expected).max() < 1e-4


@pytest.mark.slow
def test_bundle_holds_what_each_platform_needs_and_is_placed_whole(
        tmp_path: Path, trained_looking_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "app"
    code = main(["--model", "fat_b0", "--format", "tflite", "ort", "onnx", "executorch", "coreml", "--img-size", "64",
                 "--checkpoint", str(trained_looking_checkpoint), "--bundle", str(bundle), "--json",
                 "--jobs", "2"])  # parallel exports: two worker processes
    out = capsys.readouterr()
    assert code == 0, out.err
    index = json.loads((bundle / INDEX).read_text())
    assert set(index["platforms"]) == {"android", "ios", "web"}
    android, ios, web = (set(os.listdir(bundle / p)) for p in ("android", "ios", "web"))
    assert {"fat_b0_tflite_fp32_mediapipe.tflite", "fat_b0_ort_fp32.ort", "required_operators.config",
            "labels.txt", "README.md"} <= android
    assert {"fat_b0_coreml_fp32.mlpackage", "fat_b0_executorch_fp32.pte", "labels.txt", "README.md"} <= ios
    assert {"fat_b0_onnx_fp32.onnx", "labels.txt", "README.md"} <= web
    for platform in ("android", "ios", "web"):
        assert (bundle / platform / "labels.txt").read_text().splitlines() == default_labels(1000)[0]
        assert read_labels(bundle / platform / "labels.txt", 1000) == default_labels(1000)[0]  # --labels takes it
        readme = (bundle / platform / "README.md").read_text()
        assert "resize the shorter side to 73 px" in readme and "centre-crop 64 x 64" in readme
        assert "not compiled" in readme
    assert "ImageClassifier" in (bundle / "android" / "README.md").read_text()
    assert "onnxruntime-web" in (bundle / "web" / "README.md").read_text()
    assert "VNCoreMLRequest" in (bundle / "ios" / "README.md").read_text()
    summary = json.loads(out.out)
    assert all(Path(a["path"]).exists() and str(bundle) in a["path"] for a in summary)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    # A second run does not touch it without --force; a failing run leaves the previous bundle as it was.
    before = (bundle / INDEX).read_text()
    assert main(["--model", "fat_b0", "--format", "onnx", "--img-size", "64", "--bundle", str(bundle)]) == 2
    assert "--force replaces it" in capsys.readouterr().err
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(999)))
    assert main(["--model", "fat_b0", "--format", "onnx", "--img-size", "64", "--bundle", str(bundle),
                 "--labels", str(labels), "--force"]) == 2
    assert "has 999 labels, the model has 1000 classes" in capsys.readouterr().err
    assert (bundle / INDEX).read_text() == before


@pytest.mark.slow
def test_a_failing_file_leaves_no_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from fat_deploy.runtimes.ort_mobile.converter import OrtMobileFormat

    def broken(self, request, path):  # type: ignore[no-untyped-def]
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(OrtMobileFormat, "convert", broken)
    bundle = tmp_path / "app"
    code = main(["--model", "fat_b0", "--format", "onnx", "ort", "--img-size", "64", "--bundle", str(bundle),
                 "--jobs", "1"])  # in this process, where the converter is patched
    out = capsys.readouterr().out
    assert code == 1 and "converter crashed" in out and "not placed" in out
    assert not bundle.exists() and not list(tmp_path.iterdir())


def test_bundle_and_out_are_one_or_the_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "fat_b0", "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "o")]) == 2
    assert "leave --out out" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_spec_resize_contract_is_what_the_bundle_readme_states() -> None:
    from fat_deploy.common.calibration import resize_contract

    assert resize_contract(get_spec("fat_b0"), (64, 64))["resize_shorter_side"] == 73
