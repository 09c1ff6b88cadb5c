"""MNN: the exact-GELU form, the converter kept away from the user's folder and from the network, verification."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from fat_deploy.cli.inspect import main as fat_inspect
from fat_deploy.exporters import export
from fat_deploy.latency.harness import measure
from fat_deploy.models import create_model, to_deploy
from fat_deploy.runtimes.mnn.converter import ErfGelu, mnn_form


@pytest.fixture(scope="module")
def small_mnn(tmp_path_factory: pytest.TempPathFactory, trained_looking_checkpoint: Path) -> Path:
    artifact = export("fat_b0", "mnn", out=tmp_path_factory.mktemp("mnn"), img_size=64,
                      checkpoint=trained_looking_checkpoint)
    assert artifact.status == "passed", artifact.error
    assert artifact.path is not None
    return artifact.path


def test_the_mnn_form_writes_gelu_with_erf_and_is_exact() -> None:
    model = to_deploy(create_model("fat_b0")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        formed = mnn_form(model)
        after = formed(x)
    assert not any(isinstance(m, nn.GELU) for m in formed.modules())
    assert sum(isinstance(m, ErfGelu) for m in formed.modules()) == 12  # one per ConvFFN block of FAT-B0
    assert torch.allclose(before, after, atol=1e-6, rtol=0)


def test_verified_within_fp32_tolerance_and_no_tanh_gelu_in_the_file(
        small_mnn: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads(small_mnn.with_suffix(".json").read_text())
    (comparison,) = manifest["verification"]["comparisons"].values()
    assert comparison["passed"] and comparison["max_abs_diff"] < 1e-4
    assert fat_inspect([str(small_mnn), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    # erf kept as its own op: neither ONNX Gelu's nor the fused pattern's approximate GELU kernel.
    assert report["format"] == "mnn" and "GELU" not in report["ops"] and report["ops"]["ERF"] == 12
    assert report["accelerators"][0]["takes"] == sum(report["ops"].values())


def test_the_converter_leaves_the_working_folder_alone_and_sends_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained_looking_checkpoint: Path) -> None:
    # MNN's converter writes, reads back and deletes .__convert_external_data.bin in its working folder.
    monkeypatch.chdir(tmp_path)
    users = tmp_path / ".__convert_external_data.bin"
    users.write_text("the user's file")
    artifact = export("fat_b0", "mnn", out=tmp_path / "out", img_size=64, checkpoint=trained_looking_checkpoint)
    assert artifact.status == "passed", artifact.error
    assert users.read_text() == "the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".__convert_external_data.bin", "out"]
    assert "MNN.tools.utils.log" not in sys.modules  # the telemetry client of MNN's Python wrappers


def test_latency_times_the_file(small_mnn: Path) -> None:
    record = measure("fat_b0", "mnn", img_size=64, runs=5, warmup=1, artifact=small_mnn)
    assert record.status == "ok" and record.median_ms is not None and record.median_ms > 0


def test_a_file_of_another_size_or_a_damaged_one_is_refused_in_one_line(
        small_mnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fat_deploy.cli.latency import main as fat_latency

    damaged = tmp_path / "damaged.mnn"
    damaged.write_bytes(b"not a flatbuffer")
    cases = ((["--artifact", str(small_mnn), "--img-size", "96"], "takes input [1, 3, 64, 64], not [1, 3, 96, 96]"),
             (["--artifact", str(damaged)], "damaged.mnn"))
    for argv, message in cases:
        assert fat_latency(["--model", "fat_b0", "--backend", "mnn", "--runs", "2", *argv]) == 2
        (line,) = [text for text in capsys.readouterr().err.splitlines() if "error:" in text]
        assert message in line
