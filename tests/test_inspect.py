"""Coverage reports (fat-inspect and every manifest): ops by type, layout transposes, accelerator shares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from fat_deploy.cli.inspect import main
from fat_deploy.contract.coverage import Accelerator, Coverage


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
             ([str(tflite), "--format", "all"], "choose from onnx, coreml, tflite, executorch, ort\n"),
             ([str(tflite), "--ops", "-1"], "--ops must be >= 0")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
