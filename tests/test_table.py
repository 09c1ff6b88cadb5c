"""The regenerated efficiency table: the pure row builder, its outputs, and a real two-model run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fat_deploy.cli.latency import main as fat_latency
from fat_deploy.latency.table import (
    ModelProfile,
    build_rows,
    csv_table,
    markdown_table,
    plan,
    plot,
    table_models,
)
from fat_deploy.paper import efficiency_table_order


def fake_record(model: str, backend: str, median: float | None, device: str = "cpu", batch: int = 1,
                created: str = "2026-01-01T00:00:00+00:00", reason: str | None = None) -> dict[str, Any]:
    ok = median is not None
    return {
        "model": model, "backend": backend, "device": device, "batch": batch, "img_size": [224, 224],
        "threads": 1, "precision": "fp32", "status": "ok" if ok else "unavailable", "reason": reason,
        "stats": {"median_ms": median, "images_per_s": batch * 1000 / median} if ok else None,
        "environment": {"cpu": "test"}, "timed": "t", "created": created,
    }


PROFILES = {"fat_b0": ModelProfile(4.49, 0.70, 0.75), "edgevit_xxs": ModelProfile(4.07, 0.54, 0.55)}
TWO = [("EdgeViT-XXS", "edgevit_xxs"), ("FAT-B0", "fat_b0")]


def test_table_rows_follow_the_paper_order_and_map_to_registered_models() -> None:
    models = table_models()
    assert [label for label, _ in models] == list(efficiency_table_order())
    assert len(models) == 12 and ("FAT-B0", "fat_b0") in models and ("ParC-Net-S", "parcnet_s") in models


def test_build_rows_from_fake_measurements() -> None:
    records = [
        fake_record("fat_b0", "onnxruntime", 40.0),
        fake_record("fat_b0", "onnxruntime", 30.0, created="2026-02-01T00:00:00+00:00"),  # latest wins
        fake_record("edgevit_xxs", "onnxruntime", 15.0),
        fake_record("fat_b0", "tflite", 45.0),
        fake_record("fat_b0", "torch", 10.0, device="cuda"),
        fake_record("edgevit_xxs", "torch", 12.0, device="cuda"),
        fake_record("fat_b0", "torch", 100.0, device="cuda", batch=128),
        fake_record("edgevit_xxs", "torch", None, device="cuda", batch=128, reason="cuda: out of memory"),
    ]
    rows = build_rows(records, PROFILES, ["onnxruntime", "tflite"], TWO)
    edgevit, fat = rows
    assert [r.label for r in rows] == ["EdgeViT-XXS", "FAT-B0"]
    assert fat.cpu_ms == {"onnxruntime": 30.0, "tflite": 45.0} and fat.cpu_vs_b0["onnxruntime"] == 1.0
    assert edgevit.cpu_vs_b0["onnxruntime"] == pytest.approx(0.5)
    assert edgevit.cpu_ms["tflite"] is None and edgevit.reasons["cpu:tflite"] == "not measured"
    assert fat.cpu_vs_b0["tflite"] == 1.0 and edgevit.cpu_vs_b0["tflite"] is None
    assert edgevit.gpu_vs_b0 == pytest.approx(1.2)
    assert fat.throughput_img_s == pytest.approx(1280.0)
    assert edgevit.throughput_img_s is None and edgevit.reasons["throughput"] == "cuda: out of memory"
    # the paper's columns are the paper's, and its ratios are relative to the paper's FAT-B0
    assert (edgevit.paper_cpu_ms, edgevit.paper_top1, edgevit.paper_params_m) == (43.0, 74.4, 4.1)
    assert edgevit.paper_cpu_vs_b0 == pytest.approx(43.0 / 44.3)
    assert edgevit.params_m == 4.07 and fat.gmacs_total == 0.75

    text = markdown_table(rows, ["onnxruntime", "tflite"], ["cpu test"])
    assert "| **FAT-B0** | 224 | 4.49 |" in text and "15.0 (0.50x)" in text
    assert "cuda: out of memory" in text and "not measured here" in text and "top-1 is the paper's" in text
    parsed = list(csv.DictReader(io.StringIO(csv_table(rows, ["onnxruntime", "tflite"]))))
    assert parsed[0]["cpu_vs_fat_b0_onnxruntime"] == "0.5" and parsed[1]["paper_top1"] == "77.6"


def test_unavailable_backends_leave_their_reason_in_the_row() -> None:
    records = [fake_record("fat_b0", "coreml", None, reason="coreml: prediction needs macOS")]
    (row,) = build_rows(records, PROFILES, ["coreml"], [("FAT-B0", "fat_b0")])
    assert row.cpu_ms["coreml"] is None and row.reasons["cpu:coreml"] == "coreml: prediction needs macOS"
    assert row.cpu_vs_b0["coreml"] is None


def test_plan_times_cpu_per_backend_and_cuda_latency_and_throughput() -> None:
    jobs = plan(["fat_b0"], ["onnxruntime", "tflite"])
    assert [(j.backend, j.device, j.batch, j.precision) for j in jobs] == [
        ("onnxruntime", "cpu", 1, "fp32"), ("tflite", "cpu", 1, "fp32"),
        ("torch", "cuda", 1, "fp32"), ("torch", "cuda", 128, "fp16"),
    ]


def test_plot_is_written(tmp_path: Path) -> None:
    records = [fake_record("fat_b0", "onnxruntime", 30.0), fake_record("edgevit_xxs", "onnxruntime", 15.0)]
    rows = build_rows(records, PROFILES, ["onnxruntime"], TWO)
    paths = [tmp_path / "table.png", tmp_path / "table.svg"]
    plot(rows, "onnxruntime", paths, environment="test host")
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 10_000
    svg = paths[1].read_text()
    assert "<svg" in svg and "EdgeViT-XXS" in svg and "FAT-B0" in svg


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--table", "--model", "fat_b3"], "not in the paper's table: fat_b3"),
        (["--table", "--img-size", "256"], "--table measures every row at its paper input size"),
        (["--table", "--plot", "table.jpg"], "use a .png, .svg or .pdf"),
        (["--plot", "table.png"], "use it with --table"),
        (["--table", "--checkpoint", "w.pth"], "drop --checkpoint"),
    ],
)
def test_table_bad_input(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert fat_latency(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_real_two_model_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = {name: tmp_path / name for name in ("t.md", "t.csv", "t.jsonl", "t.png")}
    code = fat_latency([
        "--table", "--model", "fat_b0", "tiny_moat_0", "--runs", "3", "--warmup", "1",
        "--cache-dir", str(tmp_path / "cache"), "--markdown", str(out["t.md"]), "--csv", str(out["t.csv"]),
        "--json", str(out["t.jsonl"]), "--plot", str(out["t.png"]),
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "random weights" in captured.err
    if torch.cuda.is_available():
        assert "cuda: no CUDA device" not in captured.out
    else:  # the GPU columns say why they are empty, never a number
        assert "cuda: no CUDA device" in captured.out
    records = [json.loads(line) for line in out["t.jsonl"].read_text().splitlines()]
    cpu = [r for r in records if r["device"] == "cpu"]
    assert {r["model"] for r in cpu} == {"fat_b0", "tiny_moat_0"} and all(r["status"] == "ok" for r in cpu)
    assert all(r["profile"]["params_m"] > 3 for r in records)
    rows = list(csv.DictReader(io.StringIO(out["t.csv"].read_text())))
    assert [r["model"] for r in rows] == ["tiny-MOAT-0", "FAT-B0"]
    assert float(rows[1]["cpu_vs_fat_b0_onnxruntime"]) == 1.0 and float(rows[0]["cpu_ms_onnxruntime"]) > 0
    assert out["t.png"].stat().st_size > 10_000 and "**FAT-B0**" in out["t.md"].read_text()
    # the stored records rebuild the same table without measuring again
    assert fat_latency(["--table", "--model", "fat_b0", "tiny_moat_0", "--merge", str(out["t.jsonl"]),
                        "--csv", str(tmp_path / "merged.csv")]) == 0
    assert (tmp_path / "merged.csv").read_text() == out["t.csv"].read_text()
