"""The trained test bed (FAT-B0 on patches of the shipped photos) and quantization judged by held-out accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_weights import int8_weight_range

from fat_deploy.contract.reuse import reusing_conversions
from fat_deploy.exporters import export
from fat_deploy.testbed import (
    CHECKPOINT,
    CLASSES,
    GRID,
    IMG_SIZE,
    SHIPPED,
    TRAIN_THREADS,
    TestBed,
    TestBedError,
    build,
    patches,
    photos,
    recipe_digest,
    tiles,
    torch_threads,
)
from fat_deploy.testbed import recipe as recipe_module
from fat_deploy.testbed.__main__ import main as run_testbed_cli
from fat_deploy.testbed.bed import record_path, save_weights, sha256_of


def test_held_out_tiles_never_meet_the_training_tiles_and_patches_stay_inside_them() -> None:
    held, trained = tiles(451, 300, held_out=True), tiles(451, 300, held_out=False)
    assert len(held) == GRID and len(trained) == GRID * GRID - GRID

    def pixels(boxes: list[tuple[int, int, int, int]]) -> set[tuple[int, int]]:
        return {(x, y) for left, top, right, bottom in boxes for x in range(left, right) for y in range(top, bottom)}
    assert not pixels(held) & pixels(trained) and len(pixels(held) | pixels(trained)) == 451 * 300
    sources = photos()
    assert len(sources) == len(CLASSES) == 17
    first, labels = patches(sources[:2], 3, held_out=True, rng=np.random.default_rng(5))
    again, _ = patches(sources[:2], 3, held_out=True, rng=np.random.default_rng(5))
    assert first.shape == (6, 73, 73, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1] and np.array_equal(first, again)


def test_training_threads_are_pinned_and_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_recipe_digest_follows_the_code_not_its_comments_or_docstrings(tmp_path: Path) -> None:
    source = Path(recipe_module.__file__).read_text(encoding="utf-8")
    reworded, retuned = tmp_path / "reworded.py", tmp_path / "retuned.py"
    reworded.write_text(source.replace('"""The 17 photos as RGB', '"""All 17 photos, as RGB').replace(
        "# jitter:", "# the jitter:"), encoding="utf-8")
    retuned.write_text(source.replace("EPOCHS, BATCH, LEARNING_RATE, WEIGHT_DECAY, SEED = 12,",
                                      "EPOCHS, BATCH, LEARNING_RATE, WEIGHT_DECAY, SEED = 13,"), encoding="utf-8")
    assert reworded.read_text() != source and retuned.read_text() != source  # the edits took
    assert recipe_digest(reworded) == recipe_digest() != recipe_digest(retuned)


def test_the_repository_ships_the_weights_this_recipe_trains() -> None:
    """A recipe change not followed by retraining fails here, in seconds, not in the tests that use the bed."""
    record = json.loads(record_path(SHIPPED).read_text())
    assert record["recipe"] == recipe_digest(), "retrain: python -m fat_deploy.testbed --train --save-weights testbed"
    assert record["sha256"] == sha256_of(SHIPPED) and 75.0 <= record["float_top1_pytorch"] <= 92.0


def shipped_copy(folder: Path, **changes: object) -> Path:
    """A copy of the shipped weights and record in ``folder``, the record's fields changed."""
    folder.mkdir()
    weights = folder / CHECKPOINT
    weights.write_bytes(SHIPPED.read_bytes())
    record = {**json.loads(record_path(SHIPPED).read_text()), **changes}
    record_path(weights).write_text(json.dumps(record))
    return weights


@pytest.mark.parametrize("changes, message", [
    ({"recipe": "0123456789abcdef"}, "trained by recipe 0123456789abcdef"),
    ({"epochs": 3}, "trained for 3 epochs, the recipe's 12"),
    ({"sha256": "0" * 64}, "SHA-256 is not the one its record gives"),
    ({"float_top1_pytorch": 95.0}, "its record says 95.0%"),
])
def test_weights_that_are_not_what_the_recipe_trained_are_refused(
        tmp_path: Path, changes: dict[str, object], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    weights = shipped_copy(tmp_path / "weights", **changes)
    with pytest.raises(TestBedError, match=message):
        build(tmp_path / "cache", weights)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # nothing half-built is left
    assert run_testbed_cli(["--cache", str(tmp_path / "cache"), "--weights", str(weights)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_the_command_line_refuses_contradictions_and_missing_files(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run_testbed_cli(["--cache", str(tmp_path), "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    for argv in (["--save-weights", str(tmp_path)], ["--train", "--weights", str(SHIPPED)],
                 ["--train", "--epochs", "3", "--save-weights", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_info:
            run_testbed_cli(argv)
        assert exit_info.value.code == 2


def test_saved_weights_replace_only_a_pair_the_test_bed_wrote(tmp_path: Path) -> None:
    trained = TestBed(tmp_path, SHIPPED, tmp_path, tmp_path, tmp_path,
                      {**json.loads(record_path(SHIPPED).read_text()), "weights": "trained in this build"})
    folder = tmp_path / "repo_testbed"
    saved = save_weights(trained, folder)
    assert json.loads(record_path(saved).read_text())["sha256"] == sha256_of(saved) == sha256_of(SHIPPED)
    with pytest.raises(TestBedError, match="exists: pass --force"):
        save_weights(trained, folder)
    assert save_weights(trained, folder, force=True) == saved  # its own pair: replaced
    record_path(saved).write_text("{}")  # no longer a pair this tool wrote
    with pytest.raises(TestBedError, match="not a pair this tool wrote"):
        save_weights(trained, folder, force=True)
    assert record_path(saved).read_text() == "{}" and sorted(p.name for p in folder.iterdir()) == [
        "fat_b0_photo_patches.json", "fat_b0_photo_patches.safetensors"]  # untouched, no staging left
    shipped_record = {**trained.record, "weights": "shipped: testbed/x"}
    with pytest.raises(TestBedError, match="only weights trained in this build"):
        save_weights(TestBed(tmp_path, SHIPPED, tmp_path, tmp_path, tmp_path, shipped_record), tmp_path / "other")


def test_an_unwritable_cache_is_one_line_and_a_non_zero_exit(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run_testbed_cli(["--cache", str(blocker / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(scope="session")
def testbed() -> TestBed:
    return build()  # from the repository's shipped weights, checked, then cached


@pytest.mark.slow
def test_testbed_is_trained_accurate_and_complete(testbed: TestBed) -> None:
    assert 75.0 <= testbed.record["float_top1_pytorch"] <= 92.0  # learned, and far from perfect: int8 can hurt it
    assert testbed.record["weights"] == f"shipped: testbed/{CHECKPOINT}"
    assert abs(testbed.record["float_top1_pytorch"] - testbed.record["trained_float_top1_pytorch"]) <= 0.5
    assert testbed.record["torch_threads"] == TRAIN_THREADS  # whatever thread count the worker had set
    assert testbed.labels.read_text().split() == CLASSES
    counts = {folder.name: len(list(folder.glob("*.png"))) for folder in testbed.eval_dir.iterdir()}
    assert sorted(counts) == sorted(CLASSES) and sum(counts.values()) == testbed.record["held_out_images"] == 544
    assert len(list(testbed.calibration_dir.glob("*.png"))) >= 32


@pytest.mark.slow
def test_int8_is_judged_by_held_out_accuracy(testbed: TestBed, tmp_path: Path) -> None:
    artifact = export("fat_b0", "onnx", "int8-static", tmp_path, checkpoint=testbed.checkpoint, labels=testbed.labels,
                      img_size=IMG_SIZE, eval_dir=testbed.eval_dir, calibration=testbed.calibration_dir)
    assert artifact.status == "passed", artifact.error
    accuracy = json.loads(artifact.manifest_path.read_text())["verification"]["accuracy"]  # type: ignore[union-attr]
    assert accuracy["images"] == testbed.record["held_out_images"] and accuracy["gating"] == "top-1 drop"
    assert accuracy["reference"]["top1"] >= 75.0 and accuracy["top1_drop_points"] <= 1.0
    assert artifact.comparison is not None and artifact.comparison["top1"] == accuracy["artifact"]["top1"]
    # 7-bit weights by default: onnxruntime's AVX2 kernels (x86 without VNNI) then compute without int16 saturation
    lowest, highest = int8_weight_range(artifact.path)  # type: ignore[arg-type]
    assert -64 <= lowest and highest <= 64 and json.loads(artifact.manifest_path.read_text())[  # type: ignore[union-attr]
        "format_details"]["weight_bits"] == 7


@pytest.mark.slow
def test_an_accuracy_drop_beyond_the_limit_fails_and_leaves_nothing(
        testbed: TestBed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fat_deploy.runtimes.onnx.converter import OnnxFormat

    run = OnnxFormat.run

    def every_other_image_wrong(self, path, request, inputs, batch):  # type: ignore[no-untyped-def]
        logits = run(self, path, request, inputs, batch)
        if len(inputs) == testbed.record["held_out_images"]:  # the labeled set: swap the top class of half
            logits[::2] = np.roll(logits[::2], 1, axis=1)
        return logits

    monkeypatch.setattr(OnnxFormat, "run", every_other_image_wrong)
    artifact = export("fat_b0", "onnx", "fp32", tmp_path, checkpoint=testbed.checkpoint, labels=testbed.labels,
                      img_size=IMG_SIZE, eval_dir=testbed.eval_dir)
    assert artifact.status == "failed" and "top-1 on" in str(artifact.error) and "drops" in str(artifact.error)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_executorch_int8_modes_hold_accuracy_dynamic_without_calibration(testbed: TestBed, tmp_path: Path) -> None:
    common = dict(checkpoint=testbed.checkpoint, labels=testbed.labels, img_size=IMG_SIZE, eval_dir=testbed.eval_dir)
    with reusing_conversions():  # as in one fat-export run: the float program both are timed against is lowered once
        dynamic = export("fat_b0", "executorch", "int8-dynamic", tmp_path, **common)  # type: ignore[arg-type]
        static = export("fat_b0", "executorch", "int8-static", tmp_path, calibration=testbed.calibration_dir,
                        calibration_size=16, **common)  # type: ignore[arg-type]
    for artifact in (dynamic, static):
        assert artifact.status == "passed", (artifact.precision, artifact.error)
        manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
        accuracy, details = manifest["verification"]["accuracy"], manifest["format_details"]
        assert accuracy["gating"] == "top-1 drop" and accuracy["top1_drop_points"] <= 1.0, artifact.precision
        assert details["quantizer"].startswith("PT2E XNNPACKQuantizer") and "sqnr_db" in artifact.comparison  # type: ignore[operator]
        # int8 weights for the dense convs and linears (most of FAT-B0's parameters), float depthwise convs.
        assert artifact.size_bytes is not None and 0.25 < artifact.size_bytes / details["float_size_bytes"] < 0.45
        assert details["delegation"]["portable_by_op"] == {} and details["latency"]["float_ms"] > 0
        if artifact is dynamic:
            assert "calibration" not in details and details["scheme"].startswith("dynamic")
        else:
            assert details["calibration"]["samples"] == 16 and details["scheme"].startswith("static")
            # Held-out images only: none of the calibration images is used to verify.
            assert not set(details["calibration"]["images"]) & set(manifest["verification"]["inputs"])


@pytest.mark.slow
def test_openvino_int8_static_through_nncf_is_judged_by_held_out_accuracy(testbed: TestBed, tmp_path: Path) -> None:
    artifact = export("fat_b0", "openvino", "int8-static", tmp_path, checkpoint=testbed.checkpoint,
                      labels=testbed.labels, img_size=IMG_SIZE, eval_dir=testbed.eval_dir,
                      calibration=testbed.calibration_dir)
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    accuracy, details = manifest["verification"]["accuracy"], manifest["format_details"]
    assert accuracy["gating"] == "top-1 drop" and accuracy["top1_drop_points"] <= 1.0
    assert details["quantizer"].startswith("nncf.quantize") and details["calibration"]["samples"] == 32
    assert details["calibration"]["images"][0].startswith("calibration/")  # names, not host paths
    assert artifact.size_bytes is not None and artifact.size_bytes / details["float_size_bytes"] < 0.4
    assert details["latency"]["float_ms"] > 0 and details["latency"]["quantized_ms"] > 0


@pytest.mark.slow
def test_tflite_int8_static_holds_in_one_xnnpack_partition_and_a_quantized_stem_shows_the_damage(
        testbed: TestBed, tmp_path: Path) -> None:
    common = dict(checkpoint=testbed.checkpoint, labels=testbed.labels, img_size=IMG_SIZE, eval_dir=testbed.eval_dir,
                  calibration=testbed.calibration_dir)
    with reusing_conversions():  # both files quantize the same float file: converted once
        artifact = export("fat_b0", "tflite", "int8-static", tmp_path, **common)  # type: ignore[arg-type]
        damaged = export("fat_b0", "tflite", "int8-static", tmp_path / "stem", int8_stem=True,  # type: ignore[arg-type]
                         accuracy_search=False, **common)
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    accuracy, details = manifest["verification"]["accuracy"], manifest["format_details"]
    assert accuracy["gating"] == "top-1 drop" and accuracy["top1_drop_points"] <= 1.0
    assert details["float_stem"]["module"] == "patch_embed" and "accuracy_search" not in details
    assert {"MEAN", "MUL", "ADD"} <= set(details["float_ops"]["ops"])
    xnnpack = details["coverage"]["accelerators"][0]
    assert xnnpack["partitions"] == 1 and xnnpack["takes"] == xnnpack["total"]  # the norms' eps ADDs too
    assert damaged.status == "failed" and damaged.comparison is not None
    assert damaged.comparison["top1_drop_points"] > 2.0  # the test bed shows what a naive recipe costs


@pytest.mark.slow
def test_coreml_weight_compression_of_the_trained_model_holds_in_simulated_float16(testbed: TestBed,
                                                                                     tmp_path: Path) -> None:
    # Core ML computes int8-weights files in float16: without the float16-safe norms, a norm of layers.2.blocks.5
    # overflowed 65504 on this model (not on random or trained-looking weights).
    artifact = export("fat_b0", "coreml", "int8-weights", tmp_path, checkpoint=testbed.checkpoint,
                      labels=testbed.labels, img_size=IMG_SIZE)
    assert artifact.status == "exported-not-verified", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    check = manifest["verification"]["fp16_check"]
    assert check["float16_safe_norms"]["scaled"] > 0 and check["passed"]
