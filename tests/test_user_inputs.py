"""What users hand the tools, read as they meant it or refused in one line: images (16-bit, EXIF orientation, other
types, animations, size), labels, eval sets too small to judge by, sizes no host holds, non-finite weights, and
names that leave the host in manifests and bundle READMEs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from fat_deploy.common import calibration
from fat_deploy.common.calibration import CalibrationError, calibration_batch, folder_images, read_image
from fat_deploy.common.evaluation import EvalSet, Evaluation, judging_problem
from fat_deploy.common.labels import check_labels
from fat_deploy.environment import check_input_budget
from fat_deploy.errors import CheckpointError, FatDeployError, InputSizeError
from fat_deploy.exporters import export
from fat_deploy.exporters.bundle import markdown_text
from fat_deploy.exporters.verification import evaluate
from fat_deploy.models import create_model, get_spec
from fat_deploy.precision import Precision

ORIENTATION_TAG = 0x0112


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    pixels = np.asarray(read_image(tmp_path / "ramp.png"))
    assert pixels.shape == (64, 64, 3) and abs(pixels.mean() - 127.5) < 1.0  # convert("RGB") gives 254
    assert pixels.min() == 0 and pixels.max() == 255


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    picture = np.zeros((20, 40, 3), np.uint8)
    picture[:, :20] = 255  # left half white, as stored
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # "rotate 90 CW to view": how phones store a portrait photo
    Image.fromarray(picture).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = np.asarray(read_image(tmp_path / "phone.jpg"))
    assert upright.shape == (40, 20, 3)  # portrait, as a photo viewer shows it
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize(("save", "message"), [
    (lambda path: Image.new("RGB", (8, 8)).save(path.with_suffix(".gif"), save_all=True,
                                                append_images=[Image.new("RGB", (8, 8), "red")]),
     "2 frames (animated or multi-page)"),
    (lambda path: Image.fromarray(np.zeros((8, 8), np.int32)).save(path.with_suffix(".tif")), "32-bit integer pixels"),
    (lambda path: Image.fromarray(np.zeros((8, 8), np.float32)).save(path.with_suffix(".tif")), "floating-point"),
])
def test_images_that_would_be_read_wrongly_are_refused(tmp_path: Path, save, message: str) -> None:  # type: ignore[no-untyped-def]
    save(tmp_path / "image")
    with pytest.raises(CalibrationError, match=re.escape(message)):
        list(folder_images(tmp_path))


def test_oversized_and_damaged_images_are_named_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(calibration, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(CalibrationError, match=r"big.png \(40 x 30 px is more than 0 megapixels; downscale it"):
        list(folder_images(tmp_path))
    monkeypatch.undo()
    Image.new("RGB", (64, 64), "blue").save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CalibrationError) as refused:
        list(folder_images(tmp_path))
    assert "cut.png (" in str(refused.value) and "(OSError)" not in str(refused.value)


def test_files_of_other_types_are_named_not_skipped_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "b.gif")  # one frame: read
    for name in ("c.heic", "d.heic", "notes.txt", ".DS_Store"):
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        names = [name for name, _ in folder_images(tmp_path)]
    assert names == [f"{tmp_path.name}/a.png", f"{tmp_path.name}/b.gif"]  # the folder's name, not the host path
    assert "3 file(s) not read" in caplog.text and ".heic x2, .txt x1" in caplog.text and "DS_Store" not in caplog.text


def test_images_are_decoded_one_at_a_time_and_kept_small(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (4032, 3024), (i, i, i)).save(tmp_path / f"{i}.png")  # 12 MP phone photos
    (tmp_path / "3.png").write_bytes(b"broken")
    images = folder_images(tmp_path)
    name, first = next(images)  # yielded before the broken file is reached: nothing is held for the whole folder
    assert name.endswith("/0.png") and first.size == (4032, 3024)
    (tmp_path / "3.png").unlink()
    assert calibration._for_crops(first, (224, 224)).size == (807, 605)  # kept for crops at a fifth of the size
    batch, sources = calibration_batch(get_spec("fat_b0"), (64, 64), tmp_path, count=8)
    assert batch.shape == (8, 3, 64, 64) and sources == [f"{tmp_path.name}/{i}.png" for i in range(3)]


def test_labels_that_would_not_read_back_are_refused_before_any_work(tmp_path: Path) -> None:
    labels = [f"c{i}" for i in range(1000)]
    for bad in ("two\nlines", "cr\rinside", " padded", "sep\u2028arated"):
        with pytest.raises(FatDeployError, match="line break or spaces at its ends"):
            check_labels([bad, *labels[1:]], 1000)
    with pytest.raises(FatDeployError, match="label 0"):
        export("fat_b0", "tflite", out=tmp_path / "out", img_size=64, labels=["a\nb", *labels[1:]])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_names_going_into_markdown_are_escaped() -> None:
    shown = markdown_text("labels file <img src=x onerror=alert(1)>[click](http://x)*.txt")
    assert "<" not in shown and "](" not in shown and "\\*" in shown and "&lt;img" in shown


def test_sizes_and_batches_no_host_holds_are_refused_up_front(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputSizeError, match="more than 4096 px per side"):
        check_input_budget(1, (100000, 100000))
    with pytest.raises(InputSizeError, match="batch 10000: more than 1024"):
        check_input_budget(10000, (224, 224))
    with pytest.raises(InputSizeError, match=r"needs about 2\.0 GiB .* has 1\.0 GiB available"):
        check_input_budget(128, (64, 64), available=1 << 30)
    check_input_budget(1, (224, 224), available=1 << 30)
    from fat_deploy.cli.export import main as fat_export

    assert fat_export(["--model", "fat_b0", "--img-size", "100000", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "more than 4096 px per side" in err and len(err.strip().splitlines()) == 1


def test_non_finite_weights_are_refused_when_the_checkpoint_is_read(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = create_model("fat_b0").state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point() and k.endswith("weight"))
    state[name] = state[name].clone()
    state[name].view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=rf"NaN or Inf in 1 tensor\(s\): {name} \(3 of \d+ values\)"):
        create_model("fat_b0", checkpoint=tmp_path / "bad.safetensors")


def test_a_small_or_unlearned_eval_set_does_not_replace_the_logits_gate() -> None:
    assert judging_problem(9, 3, 100.0) == "9 images, fewer than 100"
    assert "less than halfway from chance (10.0% for 10 classes)" in str(judging_problem(500, 10, 50.0))
    assert judging_problem(500, 10, 99.2) is None
    reference = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    for images, gated in ((9, False), (300, True)):
        inputs = np.random.default_rng(0).standard_normal((images, 3, 8, 8)).astype(np.float32)
        with torch.no_grad():
            targets = reference(torch.from_numpy(inputs)).argmax(1).numpy()  # the reference scores 100%
        eval_set = EvalSet("/home/someone/eval", inputs, targets, {"a": 0, "b": 1, "c": 2})
        request = SimpleNamespace(evaluation=Evaluation(eval_set), reference=reference, precision=Precision.INT8_STATIC)
        result: dict[str, object] = {}
        judged = evaluate(request, result, lambda x: np.zeros((len(x), 3), np.float32), "a test")  # type: ignore[arg-type]
        measured = result["accuracy"]
        assert judged is gated and isinstance(measured, dict) and measured["folder"] == "eval"
        assert measured["gating"] == ("top-1 drop" if gated else "reported; logits gate kept: 9 images, fewer than 100")


def test_manifest_records_names_not_host_paths_and_the_orientation_rule(tmp_path: Path) -> None:
    labels = tmp_path / "my labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(1000)))
    artifact = export("fat_b0", "onnx", out=tmp_path / "out", img_size=64, labels=labels)
    text = artifact.manifest_path.read_text()  # type: ignore[union-attr]
    manifest = json.loads(text)
    assert manifest["labels"]["source"] == "labels file my labels.txt" and str(tmp_path) not in text
    assert manifest["preprocessing"]["orientation"].startswith("EXIF orientation applied first")
