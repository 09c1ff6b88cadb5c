"""OpenVINO: the IR folder, f32 arithmetic asked for at load, coverage, per-layer profile, what --force may replace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fat_deploy.cli.inspect import main as fat_inspect
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export
from fat_deploy.latency.harness import measure
from fat_deploy.registry import get_format
from fat_deploy.runtimes.openvino.standalone import MODEL_BIN, MODEL_XML, compile_settings, openvino_module

OPENVINO = get_format("openvino")


@pytest.fixture(scope="module")
def small_ir(tmp_path_factory: pytest.TempPathFactory, trained_looking_checkpoint: Path) -> Path:
    artifact = export("fat_b0", "openvino", out=tmp_path_factory.mktemp("ov"), img_size=64,
                      checkpoint=trained_looking_checkpoint)
    assert artifact.status == "passed", artifact.error
    assert artifact.path is not None
    return artifact.path


def test_the_artifact_is_the_ir_pair_verified_in_f32(small_ir: Path) -> None:
    assert small_ir.name == "fat_b0_openvino_fp32.openvino"
    assert sorted(p.name for p in small_ir.iterdir()) == [MODEL_BIN, MODEL_XML] and OPENVINO.is_artifact(small_ir)
    manifest = json.loads(small_ir.with_suffix(".json").read_text())
    (comparison,) = manifest["verification"]["comparisons"].values()
    assert comparison["passed"] and comparison["max_abs_diff"] < 1e-4
    assert manifest["format_details"]["weights"] == "float32"
    assert manifest["format_details"]["inference_precision_hint"].startswith("f32")


def test_every_load_asks_for_f32_arithmetic(small_ir: Path) -> None:
    ov = openvino_module()
    # Without the hint the CPU plugin picks bfloat16 on AVX512_BF16/AMX CPUs (this project's CI has seen one).
    compiled = ov.Core().compile_model(str(small_ir / MODEL_XML), "CPU", compile_settings(1))
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_fat_inspect_reads_the_folder_and_the_cpu_plugin_takes_every_op(
        small_ir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fat_inspect([str(small_ir), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    cpu, other = report["accelerators"]
    assert report["format"] == "openvino" and report["ops"]["Convolution"] > 0
    assert cpu["takes"] == cpu["total"] == sum(report["ops"].values()) and cpu["outside"] == {}
    assert not other["checked"] and "no Intel GPU or NPU" in other["verdict"]


def test_latency_times_the_ir_on_one_thread_with_a_per_layer_profile(small_ir: Path) -> None:
    record = measure("fat_b0", "openvino", img_size=64, runs=5, warmup=1, artifact=small_ir, profile_runs=3)
    assert record.status == "ok" and record.median_ms is not None and record.median_ms > 0
    profile: dict[str, Any] = record.op_profile or {}
    assert profile["source"] == "openvino profiler" and profile["runs"] == 3
    executed = {row["op_type"] for row in profile["by_op_type"]}
    assert "Convolution" in executed and not executed & {"ShapeOf", "Gather", "Mod"}  # folded at compile time
    assert all(float(row["count_per_run"]).is_integer() for row in profile["by_op_type"])


def test_force_replaces_the_ir_folder_but_never_a_folder_with_a_users_file(
        small_ir: Path, tmp_path: Path, trained_looking_checkpoint: Path) -> None:
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    previous = out / small_ir.name
    shutil.copytree(small_ir, previous)
    (previous / "notes.txt").write_text("mine")
    with pytest.raises(FatDeployError, match="holds files the format does not write"):
        export("fat_b0", "openvino", out=out, img_size=64, force=True)
    assert (previous / "notes.txt").read_text() == "mine"
    (previous / "notes.txt").unlink()
    artifact = export("fat_b0", "openvino", out=out, img_size=64, force=True, checkpoint=trained_looking_checkpoint)
    assert artifact.status == "passed" and sorted(p.name for p in previous.iterdir()) == [MODEL_BIN, MODEL_XML]


def test_a_damaged_ir_is_one_line_without_openvinos_source_locations(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "broken.openvino"
    folder.mkdir()
    (folder / MODEL_XML).write_text("<net")
    (folder / MODEL_BIN).write_bytes(b"x")
    assert fat_inspect([str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not readable as openvino" in err and "Exception from" not in err

