"""Where a file departs from PyTorch: fat-inspect --compare, and the block named when an export drifts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from fat_deploy import export, registry
from fat_deploy.cli.inspect import main as fat_inspect
from fat_deploy.exporters.compare import shows_intermediates
from fat_deploy.exporters.verification import Status
from fat_deploy.models import create_model, to_deploy

SIZE = 96  # small inputs: the blocks are the same, the exports take seconds


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory, trained_looking_checkpoint: Path) -> Path:
    artifact = export("fat_b0", "onnx", out=tmp_path_factory.mktemp("onnx"), img_size=SIZE,
                      checkpoint=trained_looking_checkpoint)
    assert artifact.status is Status.PASSED and artifact.path is not None, artifact.error
    return artifact.path


def corrupted_copy(source: Path, folder: Path, weight: torch.Tensor) -> Path:
    """``source`` (and its manifest) copied with the initializer equal to ``weight`` scaled by 1.5."""
    model = onnx.load(str(source))
    target = weight.detach().numpy()
    (initializer,) = [init for init in model.graph.initializer
                      if tuple(init.dims) == target.shape and np.allclose(numpy_helper.to_array(init), target)]
    initializer.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(initializer) * 1.5, initializer.name))
    path = folder / source.name
    onnx.save(model, str(path))
    shutil.copy(source.with_suffix(".json"), folder / source.with_suffix(".json").name)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = fat_inspect(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_faithful_file_holds_in_every_block(onnx_export: Path, trained_looking_checkpoint: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = onnx_export.read_bytes()
    code, out, _ = _run([str(onnx_export), "--compare", "--checkpoint", str(trained_looking_checkpoint), "--json"],
                        capsys)
    assert code == 0, out
    (report,) = json.loads(out)
    assert report["first_departing_block"] is None and report["tolerance"] == 1e-4
    blocks = {row["block"]: row["max_abs_rel"] for row in report["blocks"]}
    assert {"patch_embed", "layers.0.blocks.0", "layers.3.blocks.1", "head"} <= set(blocks)
    assert all(error is not None and error < 1e-5 for error in blocks.values())
    assert onnx_export.read_bytes() == before


def test_a_corrupted_block_is_named(onnx_export: Path, trained_looking_checkpoint: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    deployed = to_deploy(create_model("fat_b0", checkpoint=trained_looking_checkpoint))
    corrupted = corrupted_copy(onnx_export, tmp_path, deployed.layers[2].blocks[1].ffn.fc2.weight)
    code, out, _ = _run([str(corrupted), "--compare", "--checkpoint", str(trained_looking_checkpoint)], capsys)
    assert code == 1
    assert "departs from PyTorch first at layers.2.blocks.1" in " ".join(out.split())
    code, out, _ = _run([str(corrupted), "--compare", "--checkpoint", str(trained_looking_checkpoint), "--json"], capsys)
    rows = {row["block"]: row["max_abs_rel"] for row in json.loads(out)[0]["blocks"]}
    assert rows["layers.2.blocks.0"] < 1e-5 and rows["layers.2.blocks.1"] > 1e-2


@pytest.mark.usefixtures("fake_runtime")
def test_compare_refuses_what_it_cannot_answer(onnx_export: Path, trained_looking_checkpoint: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run([str(onnx_export), "--compare"], capsys)
    assert code == 2 and "give it with --checkpoint" in err
    other = tmp_path / "other.pth"
    torch.save(create_model("fat_b0").state_dict(), other)
    code, _, err = _run([str(onnx_export), "--compare", "--checkpoint", str(other)], capsys)
    assert code == 2 and "is not the checkpoint" in err
    alone = tmp_path / "alone.onnx"
    shutil.copy(onnx_export, alone)
    code, _, err = _run([str(alone), "--compare", "--checkpoint", str(trained_looking_checkpoint)], capsys)
    assert code == 2 and "no manifest beside it" in err
    random_init = export("fat_b0", "onnx", out=tmp_path / "random", img_size=64)
    assert random_init.path is not None
    code, _, err = _run([str(random_init.path), "--compare"], capsys)
    assert code == 2 and "exported from random weights" in err
    npz = export("fat_b0", "npz", out=tmp_path / "npz", img_size=64, checkpoint=trained_looking_checkpoint)
    assert npz.path is not None
    code, _, err = _run([str(npz.path), "--compare", "--checkpoint", str(trained_looking_checkpoint)], capsys)
    able = [name for name, fmt in registry.formats().items() if shows_intermediates(fmt)]
    assert code == 2 and f"(it can for: {', '.join(able)})" in err and "onnx" in able and "tflite" in able
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    shutil.copy(onnx_export, tampered / onnx_export.name)
    manifest = json.loads(onnx_export.with_suffix(".json").read_text())
    manifest["preprocessing"]["center_crop"] = ["wide", 96]
    (tampered / onnx_export.with_suffix(".json").name).write_text(json.dumps(manifest))
    code, _, err = _run([str(tampered / onnx_export.name), "--compare"], capsys)
    assert code == 2 and "not a fat-export manifest (ValueError" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run([str(onnx_export), "--tolerance", "0.1"], capsys)
    assert code == 2 and "--checkpoint and --tolerance go with --compare" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite", "openvino", "ncnn"])
def test_an_export_that_drifts_names_the_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    format_type = type(registry.get_format(fmt))
    real = format_type.convert

    def drifting(self, request, path):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            request.model.layers[1].blocks[0].ffn.fc2.weight.mul_(1.5)
        return real(self, request, path)

    monkeypatch.setattr(format_type, "convert", drifting)
    artifact = export("fat_b0", fmt, out=tmp_path, img_size=SIZE)
    assert artifact.status is Status.FAILED and artifact.path is None
    assert artifact.error and "departs from PyTorch first at layers.1.blocks.0" in artifact.error
