"""ncnn: the norm pnnx gets wrong, written so it gets it right; verification, coverage, timing, folder handling."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fat_deploy.cli.inspect import main as fat_inspect
from fat_deploy.cli.latency import main as fat_latency
from fat_deploy.common.calibration import verification_inputs
from fat_deploy.exporters import export
from fat_deploy.latency.harness import measure
from fat_deploy.models import create_model, get_spec, to_deploy
from fat_deploy.models.deploy import ChannelSpatialNorm, ReducedChannelSpatialNorm
from fat_deploy.runtimes.ncnn.converter import ncnn_form, pnnx_convert
from fat_deploy.runtimes.ncnn.standalone import BIN, PARAM, load

SIZE = 64


@pytest.fixture(scope="module")
def small_ncnn(tmp_path_factory: pytest.TempPathFactory, trained_looking_checkpoint: Path) -> Path:
    artifact = export("fat_b0", "ncnn", out=tmp_path_factory.mktemp("ncnn"), img_size=SIZE,
                      checkpoint=trained_looking_checkpoint)
    assert artifact.status == "passed", artifact.error
    assert artifact.path is not None
    return artifact.path


def test_the_ncnn_form_writes_the_norms_as_means_and_is_exact() -> None:
    model = to_deploy(create_model("fat_b0")).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = model(x)
        formed = ncnn_form(model)
        after = formed(x)
    assert not any(type(m) is ChannelSpatialNorm for m in formed.modules())
    assert sum(type(m) is ReducedChannelSpatialNorm for m in formed.modules()) == 26
    assert torch.allclose(before, after, atol=1e-5, rtol=0)


def test_pnnx_gets_the_plain_deploy_form_wrong_and_the_ncnn_form_right(tmp_path: Path,
                                                                         trained_looking_checkpoint: Path) -> None:
    """Why the form exists: pnnx turns the LayerNorm over (C, H, W) into a per-channel ncnn LayerNorm."""
    deployed = to_deploy(create_model("fat_b0", checkpoint=trained_looking_checkpoint)).eval()
    inputs, _ = verification_inputs(get_spec("fat_b0"), (SIZE, SIZE), photos=2, random=0)
    with torch.no_grad():
        reference = deployed(torch.from_numpy(inputs)).numpy()
    errors = {}
    for name, model in (("plain", deployed), ("ncnn", ncnn_form(copy.deepcopy(deployed)))):
        pnnx_convert(model, torch.randn(1, 3, SIZE, SIZE), tmp_path / name, fp16=False)
        outputs = load(str(tmp_path / name), 1)(inputs)
        errors[name] = float(np.abs(outputs - reference).max() / np.abs(reference).max())
    assert errors["plain"] > 0.05 and errors["ncnn"] < 1e-4, errors


def test_verified_within_fp32_tolerance_and_inspected(small_ncnn: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads(small_ncnn.with_suffix(".json").read_text())
    (comparison,) = manifest["verification"]["comparisons"].values()
    assert comparison["passed"] and comparison["max_abs_rel"] < 1e-4
    assert sorted(p.name for p in small_ncnn.iterdir()) == sorted([BIN, PARAM])
    assert f"0={SIZE} 1={SIZE} 2=3" in (small_ncnn / PARAM).read_text()  # the input shape, for the session's check
    assert fat_inspect([str(small_ncnn), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["format"] == "ncnn" and "LayerNorm" not in report["ops"] and report["ops"]["Reduction"] == 104
    assert report["accelerators"][0]["takes"] == sum(report["ops"].values())


def test_pnnx_leaves_the_working_folder_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    artifact = export("fat_b0", "ncnn", out=tmp_path / "out", img_size=SIZE)
    assert artifact.status == "passed", artifact.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no model.pt, pnnx.py, .onnx side files


def test_latency_times_the_folder_and_refuses_another_size(small_ncnn: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    record = measure("fat_b0", "ncnn", img_size=SIZE, runs=5, warmup=1, artifact=small_ncnn)
    assert record.status == "ok" and record.median_ms is not None and record.median_ms > 0
    assert record.fresh_process is not None and record.fresh_process["runtime"] == "ncnn"
    assert fat_latency(["--model", "fat_b0", "--backend", "ncnn", "--runs", "2", "--artifact", str(small_ncnn),
                        "--img-size", "96"]) == 2
    err = capsys.readouterr().err
    assert f"takes input [1, 3, {SIZE}, {SIZE}], not [1, 3, 96, 96]" in err and err.count("error:") == 1


def test_force_replaces_an_ncnn_folder_but_never_a_folder_with_a_users_file(tmp_path: Path) -> None:
    first = export("fat_b0", "ncnn", out=tmp_path, img_size=SIZE)
    assert first.path is not None
    again = export("fat_b0", "ncnn", out=tmp_path, img_size=SIZE, force=True)
    assert again.status == "passed" and again.path == first.path
    (first.path / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not"):
        export("fat_b0", "ncnn", out=tmp_path, img_size=SIZE, force=True)
    assert (first.path / "notes.txt").read_text() == "mine" and os.path.exists(first.path / PARAM)
