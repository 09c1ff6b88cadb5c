"""The trained test bed (FAT-B0 on scikit-learn's digits) and quantization judged by held-out accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fat_deploy.exporters import export
from fat_deploy.testbed import IMG_SIZE, TRAIN_THREADS, TestBed, build, split, torch_threads


def test_held_out_split_is_disjoint_stratified_and_reproducible() -> None:
    targets = np.repeat(np.arange(10), 50)
    train, test = split(targets, held_out=100, seed=0)
    assert len(test) == 100 and not set(train) & set(test) and len(train) + len(test) == 500
    assert np.bincount(targets[test]).tolist() == [10] * 10
    assert np.array_equal(split(targets, held_out=100, seed=0)[1], test)


def test_training_threads_are_pinned_and_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.fixture(scope="session")
def testbed() -> TestBed:
    return build()  # trained once (minutes), then cached


@pytest.mark.slow
def test_testbed_is_trained_accurate_and_complete(testbed: TestBed) -> None:
    assert testbed.record["float_top1_pytorch"] >= 90.0
    assert testbed.record["torch_threads"] == TRAIN_THREADS  # whatever thread count the worker had set
    assert testbed.labels.read_text().split() == [str(d) for d in range(10)]
    counts = {folder.name: len(list(folder.glob("*.png"))) for folder in testbed.eval_dir.iterdir()}
    assert sorted(counts) == [str(d) for d in range(10)] and sum(counts.values()) == testbed.record["held_out_images"]
    assert len(list(testbed.calibration_dir.glob("*.png"))) >= 32


@pytest.mark.slow
def test_int8_is_judged_by_held_out_accuracy(testbed: TestBed, tmp_path: Path) -> None:
    artifact = export("fat_b0", "onnx", "int8-static", tmp_path, checkpoint=testbed.checkpoint, labels=testbed.labels,
                      img_size=IMG_SIZE, eval_dir=testbed.eval_dir, calibration=testbed.calibration_dir)
    assert artifact.status == "passed", artifact.error
    accuracy = json.loads(artifact.manifest_path.read_text())["verification"]["accuracy"]  # type: ignore[union-attr]
    assert accuracy["images"] == testbed.record["held_out_images"] and accuracy["gating"] == "top-1 drop"
    assert accuracy["reference"]["top1"] >= 90.0 and accuracy["top1_drop_points"] <= 1.0
    assert artifact.comparison is not None and artifact.comparison["top1"] == accuracy["artifact"]["top1"]


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
def test_executorch_int8_dynamic_holds_accuracy_without_calibration(testbed: TestBed, tmp_path: Path) -> None:
    artifact = export("fat_b0", "executorch", "int8-dynamic", tmp_path, checkpoint=testbed.checkpoint,
                      labels=testbed.labels, img_size=IMG_SIZE, eval_dir=testbed.eval_dir)
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    accuracy, details = manifest["verification"]["accuracy"], manifest["format_details"]
    assert accuracy["gating"] == "top-1 drop" and accuracy["top1_drop_points"] <= 1.0
    assert "calibration" not in details and details["scheme"].startswith("dynamic")
    # int8 weights for the dense convs and linears (most of FAT-B0's parameters), float depthwise convs.
    assert artifact.size_bytes is not None and 0.25 < artifact.size_bytes / details["float_size_bytes"] < 0.45
    assert details["delegation"]["portable_by_op"] == {} and details["latency"]["float_ms"] > 0


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
