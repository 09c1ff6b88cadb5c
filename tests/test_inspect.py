"""Coverage reports (fat-inspect and every manifest): ops by type, layout transposes, accelerator shares."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from fat_deploy.cli.inspect import main
from fat_deploy.contract.coverage import Accelerator, Coverage
from fat_deploy.registry import formats


class ConvThenCumsum(nn.Module):
    """A convolution (XNNPACK takes it) and a cumulative sum (no XNNPACK kernel, in LiteRT or ExecuTorch)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.conv(x), dim=1).relu() * 2.0


def tiny_tflite(path: Path) -> Path:
    import litert_torch

    litert_torch.convert(ConvThenCumsum().eval(), (torch.randn(1, 3, 8, 8),)).export(str(path))
    return path


def test_xnnpack_share_names_the_op_it_leaves_out(tmp_path: Path) -> None:
    from fat_deploy.runtimes.tflite.coverage import tflite_coverage

    report = tflite_coverage(tiny_tflite(tmp_path / "tiny.tflite"))
    xnnpack, gpu = report.accelerators
    # The delegate takes every op but CUMSUM, in two pieces: the convolution before it and RELU, MUL after it.
    assert xnnpack.total == sum(report.ops.values()) and xnnpack.takes == xnnpack.total - 1
    assert xnnpack.partitions == 2
    assert xnnpack.outside == {"CUMSUM": 1} and not xnnpack.whole
    assert report.ops["CUMSUM"] == 1 and report.layout_transposes == report.ops["TRANSPOSE"] >= 2
    assert not gpu.checked and "not checked here" in gpu.line()
    assert report.summary_line() == f"XNNPACK {xnnpack.takes}/{xnnpack.total} ops, 2 partitions (outside: CUMSUM x1)"


def test_pte_coverage_counts_portable_kernel_calls(tmp_path: Path) -> None:
    from fat_deploy.runtimes.executorch.converter import lower_to_xnnpack
    from fat_deploy.runtimes.executorch.coverage import pte_coverage

    program, _ = lower_to_xnnpack(ConvThenCumsum().eval(), torch.randn(1, 3, 8, 8))
    path = tmp_path / "tiny.pte"
    path.write_bytes(program)
    report = pte_coverage(path)
    (xnnpack,) = report.accelerators
    assert xnnpack.name == "XNNPACK" and xnnpack.partitions >= 1
    assert any("cumsum" in op for op in xnnpack.outside) and not xnnpack.whole
    assert report.ops["delegate:XnnpackBackend"] == xnnpack.partitions


def test_whole_means_one_partition_and_nothing_outside() -> None:
    whole = Accelerator(name="X", takes=3, total=3, partitions=1)
    split = Accelerator(name="X", takes=3, total=3, partitions=2)
    assert whole.whole and not split.whole
    assert Coverage("onnx", {"Conv": 3}, 0, [whole, split]).summary_line() == "X whole; X 3/3 ops, 2 partitions"


def test_fat_inspect_reports_files_and_refuses_bad_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tflite = tiny_tflite(tmp_path / "tiny.tflite")
    capsys.readouterr()  # the converter's own progress lines
    assert main([str(tflite), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["format"] == "tflite" and report["accelerators"][0]["outside"] == {"CUMSUM": 1}
    assert main([str(tflite)]) == 0
    shown = capsys.readouterr().out
    assert "XNNPACK" in shown and "CUMSUM x1" in shown and f"layout transposes: {report['layout_transposes']}" in shown
    garbage = tmp_path / "broken.tflite"
    garbage.write_bytes(b"not a flatbuffer")
    cases = [([str(tmp_path / "missing.onnx")], "missing.onnx: no such file"),
             ([str(tmp_path)], "cannot tell the format"),
             ([str(garbage)], "broken.tflite: not readable as tflite"),
             ([str(tflite), "--format", "onnx"], "not readable as onnx"),
             ([str(tflite), "--format", "zip"], "unknown format 'zip'"),
             ([str(tflite), "--format", "all"], f"choose from {', '.join(formats())}\n"),
             ([str(tflite), "--ops", "-1"], "--ops must be >= 0")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_mlpackage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import coremltools as ct

    exported = torch.export.export(nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 8, 8),)).run_decompositions({})
    mlmodel = ct.convert(exported, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
    path = tmp_path_factory.mktemp("coreml") / "tiny.mlpackage"
    mlmodel.save(str(path))
    return path


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_inspecting_a_package_leaves_it_as_it_was(tiny_mlpackage: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(tiny_mlpackage)
    assert main([str(tiny_mlpackage), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["format"] == "coreml" and report["ops"]["conv"] == 1
    assert _snapshot(tiny_mlpackage) == before  # coremltools rewrites Manifest.json of what it opens: it got a copy


def _outside_model(tiny_mlpackage: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the package, and outside it a valid model spec (the canary) that the copy will try to reach:
    were it read, fat-inspect would succeed."""
    package = tmp_path / "evil.mlpackage"
    shutil.copytree(tiny_mlpackage, package)
    canary = tmp_path / "elsewhere" / "model.mlmodel"
    canary.parent.mkdir()
    shutil.copy(package / "Data" / "com.apple.CoreML" / "model.mlmodel", canary)
    return package, canary


def test_package_naming_a_file_outside_itself_is_refused(
        tiny_mlpackage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package, canary = _outside_model(tiny_mlpackage, tmp_path)
    manifest = json.loads((package / "Manifest.json").read_text())
    for item in manifest["itemInfoEntries"].values():
        if item["name"] == "model.mlmodel":
            item["path"] = "../../elsewhere/model.mlmodel"
    (package / "Manifest.json").write_text(json.dumps(manifest))
    (package / "Data" / "com.apple.CoreML" / "model.mlmodel").unlink()
    assert "a path outside it; refused" in _refused([str(package)], capsys)
    for item in manifest["itemInfoEntries"].values():
        if item["name"] == "model.mlmodel":
            item["path"] = str(canary)  # absolute
    (package / "Manifest.json").write_text(json.dumps(manifest))
    err = _refused([str(package)], capsys)
    assert "a path outside it; refused" in err and "fat-deploy-input-" not in err  # the user's path, not the copy's


def test_package_with_a_symlink_or_fifo_inside_is_refused(
        tiny_mlpackage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package, canary = _outside_model(tiny_mlpackage, tmp_path)
    model = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    model.unlink()
    model.symlink_to(canary)
    assert "model.mlmodel is a symbolic link" in _refused([str(package)], capsys)
    model.unlink()
    os.mkfifo(model)
    assert "model.mlmodel is a FIFO" in _refused([str(package)], capsys)


@pytest.mark.timeout(60)
def test_fifo_device_and_oversized_files_are_refused_before_reading(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "x.onnx"
    os.mkfifo(fifo)
    assert "a FIFO, not a model file; refused" in _refused([str(fifo)], capsys)  # opening it would block for ever
    zero = tmp_path / "zero.onnx"
    zero.symlink_to("/dev/zero")
    assert "a character device, not a model file" in _refused([str(zero)], capsys)
    sparse = tmp_path / "huge.onnx"
    with sparse.open("wb") as handle:
        handle.truncate(3 << 30)  # 3 GiB, no blocks: a reader would still allocate it all
    assert "more than a model file can hold" in _refused([str(sparse), "--format", "tflite"], capsys)
