"""Artifacts run by the aarch64 builds of their runtimes on an emulated Cortex-A76 (fat-export --arm64)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fat_deploy import export
from fat_deploy.cli.export import main as fat_export
from fat_deploy.common.aarch64 import ROOT_VARIABLE, unavailable_reason
from fat_deploy.errors import FatDeployError


def test_arm64_is_refused_where_it_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in (
        (["--format", "coreml"], "--arm64: no aarch64 runtime for coreml files here (there is for: onnx, tflite, ort)"),
        (["--format", "tflite", "--mediapipe"], "app forms such as --mediapipe"),
        (["--format", "onnx", "--no-verify"], "cannot go with --no-verify"),
    ):
        code = fat_export(["--model", "fat_b0", *argv, "--arm64", "--img-size", "64", "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setenv(ROOT_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(FatDeployError, match="no ARM64 emulation root at .*make arm64-root"):
        export("fat_b0", "onnx", out=tmp_path, img_size=64, arm64=True)
    assert list(tmp_path.iterdir()) == []


def _require_emulation() -> None:
    if (reason := unavailable_reason()) is not None:
        if os.environ.get("FAT_DEPLOY_EXPECT_ARM64") == "1":  # make test built it (root, apt): missing is a failure
            pytest.fail(f"ARM64 emulation missing where make test sets it up: {reason}")
        pytest.skip(f"ARM64 emulation not set up here: {reason}")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8-static"])
def test_fat_b0_files_hold_on_aarch64_runtimes(tmp_path: Path, trained_looking_checkpoint: Path, precision: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # At 64 px: the emulated runs took ~9 s per file at 224 px (the test 58 s); the kernels run are the same ones.
    _require_emulation()
    code = fat_export(["--model", "fat_b0", "--format", "onnx", "ort", "tflite", "--precision", precision, "--arm64",
                       "--img-size", "64", "--checkpoint", str(trained_looking_checkpoint), "--out", str(tmp_path),
                       "--json", "--jobs", "1"])
    records = json.loads(capsys.readouterr().out)
    assert code == 0, records
    for record in records:
        manifest = json.loads(Path(record["manifest"]).read_text())
        emulated = manifest["verification"]["aarch64"]
        assert emulated["passed"] and emulated["cpu_emulated"] == "cortex-a76", (record["format"], emulated)
        assert "aarch64 wheel" in emulated["runtime"] and emulated["emulator"].startswith("qemu-aarch64")
        assert emulated["comparison"]["inputs"] == 2 and emulated["comparison"]["max_abs_rel"] is not None
        if precision == "fp32":  # ARM kernels and x86 kernels agree to float rounding
            assert emulated["comparison"]["max_abs_rel"] < 1e-4 and emulated["x86_vs_aarch64_max_abs_diff"] < 1e-3
