"""fat-latency: statistics, backends (available or with a reason), records, merge, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fat_deploy.cli.latency import main as fat_latency
from fat_deploy.contract.session import BackendError
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export
from fat_deploy.latency.charts import cost_plot, op_profile_chart
from fat_deploy.latency.harness import TIMED, measure
from fat_deploy.latency.report import COLUMNS, REQUIRED_FIELDS, append_jsonl, read_jsonl, rows
from fat_deploy.latency.stats import BUSY_HOST_SHARE, busy_host_problem, noise_problem, summarize


def test_stats_on_known_samples() -> None:
    stats = summarize([5.0, 1.0, 4.0, 2.0, 3.0], batch=2)
    assert (stats.runs, stats.min_ms, stats.median_ms, stats.mean_ms) == (5, 1.0, 3.0, 3.0)
    assert stats.std_ms == pytest.approx(1.5811388, rel=1e-6)  # sample standard deviation
    assert stats.p90_ms == pytest.approx(4.6) and stats.p99_ms == pytest.approx(4.96)
    assert stats.images_per_s == pytest.approx(2000 / 3)
    assert summarize([7.0]).std_ms == 0.0
    with pytest.raises(ValueError):
        summarize([])


@pytest.fixture(scope="module")
def onnx_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifact = export("fat_b0", "onnx", out=tmp_path_factory.mktemp("onnx"), img_size=64)
    assert artifact.path is not None, artifact.error
    return artifact.path


def _sane(record, backend: str) -> None:  # type: ignore[no-untyped-def]
    assert record.status == "ok", record.reason
    assert record.backend == backend and record.stats["runs"] >= 3
    stats = record.stats
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p99_ms"]
    assert record.init_ms > 0 and record.first_run_ms > 0 and record.peak_rss_mb > 0
    assert record.environment["threads"] == 1 and record.environment["cores"] >= 1
    assert record.timed == TIMED


def test_torch_backend_measures(tmp_path: Path) -> None:
    record = measure("fat_b0", "torch", img_size=64, runs=3, warmup=1)
    _sane(record, "torch")
    assert record.artifact is None and record.fresh_process is None  # no file to load in a process of its own


def test_a_fresh_process_measures_what_an_app_pays(onnx_64: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = measure("fat_b0", "onnxruntime", img_size=64, runs=3, warmup=1, artifact=onnx_64)
    fresh = record.fresh_process
    assert fresh is not None and fresh["runtime"] == "onnxruntime" and fresh["steady_runs"] == 5
    assert 0 < fresh["baseline_mb"] < record.peak_rss_mb  # the child imported onnxruntime, not torch and the rest
    size_mb = onnx_64.stat().st_size / 2**20
    assert size_mb * 0.9 < fresh["load_delta_mb"] < size_mb * 6  # the weights at least, not the process
    assert fresh["first_run_peak_delta_mb"] >= fresh["load_delta_mb"] - 1
    assert fresh["start_to_first_result_ms"] > fresh["import_ms"] + fresh["load_ms"] + fresh["first_run_ms"] > 0
    assert fresh["steady_median_ms"] > 0
    row = dict(zip(COLUMNS, rows([record.as_dict()])[0]))
    assert float(row["load MB"]) == fresh["load_delta_mb"] and float(row["cold ms"]) > 0 and row["run MB"] != "-"
    skipped = measure("fat_b0", "onnxruntime", img_size=64, runs=1, warmup=0, artifact=onnx_64, fresh_process=False)
    assert skipped.fresh_process is None


def test_onnxruntime_backend_times_an_artifact(onnx_64: Path) -> None:
    record = measure("fat_b0", "onnxruntime", img_size=64, runs=3, warmup=1, artifact=onnx_64)
    _sane(record, "onnxruntime")
    assert record.artifact_sha256 and len(record.artifact_sha256) == 64


@pytest.mark.slow
def test_tflite_backend_exports_then_measures(tmp_path: Path) -> None:
    record = measure("fat_b0", "tflite", img_size=64, runs=3, warmup=1, cache_dir=tmp_path)
    _sane(record, "tflite")
    again = measure("fat_b0", "tflite", img_size=64, runs=3, warmup=1, cache_dir=tmp_path)
    assert again.artifact == record.artifact  # the cached, verified export is reused


def test_unavailable_backends_say_why() -> None:
    coreml = measure("fat_b0", "coreml", img_size=64)
    assert coreml.status == "unavailable" and coreml.reason == "coreml: prediction needs macOS"
    assert coreml.stats is None
    if not torch.cuda.is_available():
        cuda = measure("fat_b0", "torch", device="cuda", img_size=64)
        assert cuda.status == "unavailable" and cuda.reason == "cuda: no CUDA device"


def test_records_round_trip_and_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = measure("fat_b0", "torch", img_size=64, runs=3, warmup=0).as_dict()
    second = measure("fat_b0", "coreml", img_size=64).as_dict()
    append_jsonl(tmp_path / "a.jsonl", [first])
    append_jsonl(tmp_path / "b.jsonl", [second])
    append_jsonl(tmp_path / "a.jsonl", [first])  # appends, never overwrites
    records = read_jsonl([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert len(records) == 3 and all(set(REQUIRED_FIELDS) <= set(r) for r in records)
    assert json.loads(json.dumps(records[0])) == records[0]
    code = fat_latency(["--merge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"),
                        "--markdown", str(tmp_path / "t.md"), "--csv", str(tmp_path / "t.csv")])
    out = capsys.readouterr().out
    assert code == 0 and "3 merged measurements" in out and "prediction needs macOS" in out
    markdown = (tmp_path / "t.md").read_text()
    assert markdown.count("| fat_b0 |") == 3 and "Environment: cpu" in markdown
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("model,backend,device")


def test_cli_measures_and_appends_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "r.jsonl"
    code = fat_latency(["--model", "fat_b0", "--backend", "torch", "coreml", "--img-size", "64",
                        "--runs", "3", "--warmup", "0", "--json", str(out_file)])
    assert code == 0
    records = read_jsonl([out_file])
    assert [r["backend"] for r in records] == ["torch", "coreml"]
    assert "timed: model invocation only" in capsys.readouterr().out


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert fat_latency(list(argv)) == 2
    err = capsys.readouterr().err
    (line,) = [text for text in err.splitlines() if text.startswith("fat-latency: error:")]
    assert "Traceback" not in err
    return line


def test_bad_cli_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, onnx_64: Path) -> None:
    assert "unknown backend 'tensorrt'" in _error(capsys, "--backend", "tensorrt")
    assert "--threads must be at least 1" in _error(capsys, "--threads", "0")
    assert "unknown model 'fat_b8'" in _error(capsys, "--model", "fat_b8")
    assert "x.onnx: no such file" in _error(capsys, "--model", "fat_b0", "--artifact", str(tmp_path / "x.onnx"))
    assert "exactly one --model" in _error(capsys, "--artifact", str(onnx_64))
    os.mkfifo(tmp_path / "pipe.onnx")
    assert "a FIFO, not a model file" in _error(capsys, "--model", "fat_b0", "--artifact", str(tmp_path / "pipe.onnx"))
    for option in ("--json", "--markdown", "--csv"):  # checked before any timing
        assert "it is a folder" in _error(capsys, "--model", "fat_b0", "--backend", "torch", option, str(tmp_path))
    assert "it is a folder" in _error(capsys, "--table", "--model", "fat_b0", "--plot", str(tmp_path / "p.png"),
                                      "--markdown", str(tmp_path))
    assert "cannot write" in _error(capsys, "--model", "fat_b0", "--backend", "torch",
                                    "--json", str(tmp_path / "missing" / "r.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "x"}\n')
    assert "not a fat-latency record" in _error(capsys, "--merge", str(bad))


def test_artifact_that_does_not_match(onnx_64: Path) -> None:
    with pytest.raises(BackendError, match=r"takes input \[1, 3, 64, 64\], not \[1, 3, 96, 96\]"):
        measure("fat_b0", "onnxruntime", img_size=96, artifact=onnx_64, runs=1)
    with pytest.raises(BackendError, match=r"not \[4, 3, 64, 64\].*--dynamic-batch"):
        measure("fat_b0", "onnxruntime", img_size=64, batch=4, artifact=onnx_64, runs=1)
    with pytest.raises(BackendError, match="times a model, not an artifact"):
        measure("fat_b0", "torch", artifact=onnx_64)


def test_per_op_profile_from_onnxruntime_and_torch(onnx_64: Path) -> None:
    record = measure("fat_b0", "onnxruntime", img_size=64, runs=2, warmup=0, artifact=onnx_64, profile_runs=3)
    profile = record.op_profile
    assert profile is not None and profile["runs"] == 3 and profile["source"] == "onnxruntime profiler"
    by_type = {row["op_type"]: row for row in profile["by_op_type"]}
    assert "Conv" in by_type and by_type["Conv"]["count_per_run"] >= 20 and by_type["Conv"]["ms_per_run"] > 0
    assert sum(row["share"] for row in profile["by_op_type"]) == pytest.approx(1.0, abs=0.01)
    assert sum(row["ms_per_run"] for row in profile["by_op_type"]) == pytest.approx(profile["total_ms_per_run"], rel=0.01)
    assert profile["top_ops"][0]["ms_per_run"] >= profile["top_ops"][-1]["ms_per_run"]
    eager = measure("fat_b0", "torch", img_size=64, runs=2, warmup=0, profile_runs=2).op_profile
    assert eager is not None and any("conv" in row["op_type"] for row in eager["by_op_type"])
    assert record.stats is not None  # timing happened before, and apart from, profiling


def test_runtimes_without_a_profiler_say_why() -> None:
    from fat_deploy.contract.session import ProfileUnavailable
    from fat_deploy.runtimes.tflite.session import TFLiteRunner

    with pytest.raises(ProfileUnavailable, match="benchmark_model"):
        TFLiteRunner.op_times(None, None, 1)  # type: ignore[arg-type]


def test_profile_is_refused_where_nothing_is_measured(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "run it without --table" in _error(capsys, "--table", "--profile")
    assert "drop --device" in _error(capsys, "--table", "--device", "cuda")  # never silently ignored


def test_time_interleaved_alternates_and_leaves_out_warmup() -> None:
    from fat_deploy.contract.timing import time_interleaved

    calls: list[str] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, prepared: object) -> None:
            calls.append(self.name)

    samples = time_interleaved({"a": (Recorder("a"), None), "b": (Recorder("b"), None)}, warmup=2, runs=3)
    assert calls == ["a", "b"] * 5
    assert [len(samples["a"]), len(samples["b"])] == [3, 3] and all(ms >= 0 for ms in samples["a"])


def test_a_disturbed_measurement_says_so() -> None:
    quiet_run = summarize([10.0, 10.2, 9.9, 10.1, 10.3, 10.0, 9.8, 10.1, 10.2, 10.0])
    assert noise_problem(quiet_run) is None
    busy = summarize([10.0, 10.2, 9.9, 24.0, 10.3, 10.0, 31.0, 10.1, 10.2, 10.0])  # another process took the core
    problem = noise_problem(busy)
    assert problem is not None and problem.startswith("noisy timing: std") and "p90 " in problem
    assert noise_problem(summarize([10.0, 30.0])) is None  # too few runs to judge


def test_other_processes_cpu_time_is_noticed(onnx_64: Path) -> None:
    assert busy_host_problem(0.05) is None and busy_host_problem(None) is None
    assert (problem := busy_host_problem(0.6)) is not None and problem.startswith("busy host: other processes used 60%")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        record = measure("fat_b0", "onnxruntime", img_size=64, runs=40, warmup=1, artifact=onnx_64,
                         fresh_process=False)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert record.stats is not None and record.stats["others_cpu_share"] > BUSY_HOST_SHARE
    assert record.note is not None and "busy host: other processes used" in record.note


@pytest.mark.slow
def test_end_to_end_times_each_stage_of_each_file_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = fat_latency(["--model", "fat_b0", "--backend", "onnxruntime", "--img-size", "64", "--runs", "3", "--warmup", "1",
                 "--end-to-end", "--cache-dir", str(tmp_path), "--json", str(tmp_path / "records.jsonl"),
                 "--no-fresh-process"])
    out = capsys.readouterr().out
    assert code == 0 and "image to label" in out
    (record,) = read_jsonl([tmp_path / "records.jsonl"])
    plain, app = record["end_to_end"]
    assert plain["form"] == "plain file"
    assert [s["stage"] for s in plain["stages"]] == ["decode", "preprocess", "inference", "postprocess"]
    assert app["form"] == "--image-bytes file" and [s["stage"] for s in app["stages"]] == ["decode", "classify"]
    assert "onnxruntime-extensions" in app["client"] and "JPEG/PNG decode" in app["inside"]
    for form in (plain, app):
        assert form["images"] >= 6 and all(s["ms"] > 0 for s in form["stages"])
        assert abs(sum(s["share"] for s in form["stages"]) - 1) < 0.01 and form["total_ms"] > 0
    with pytest.raises(FatDeployError, match="leave --batch at 1"):
        measure("fat_b0", "torch", img_size=64, batch=2, end_to_end=True)


def test_charts_draw_where_time_and_memory_go(onnx_64: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    record = measure("fat_b0", "onnxruntime", img_size=64, runs=3, warmup=1, artifact=onnx_64, profile_runs=2)
    eager = measure("fat_b0", "torch", img_size=64, runs=2, warmup=0, profile_runs=2)
    records = [record.as_dict(), eager.as_dict()]
    svg = tmp_path / "profile.svg"
    assert op_profile_chart(records, [svg, tmp_path / "profile.png"]) == 2
    text = svg.read_text()
    assert "fat_b0 on onnxruntime (fp32)" in text and "fat_b0 on torch (fp32)" in text and "Conv" in text
    assert (tmp_path / "profile.png").read_bytes().startswith(b"\x89PNG")
    cost = tmp_path / "cost.svg"
    assert cost_plot(records, [cost]) == 1  # torch runs no file: no load memory to plot
    assert "fat_b0 / onnxruntime" in cost.read_text()
    for argv, expected in ((["--profile-chart", str(tmp_path / "a.png")], "add --profile"),
                           (["--cost-plot", str(tmp_path / "a.jpg")], "use a .png, .svg or .pdf")):
        assert fat_latency(["--model", "fat_b0", "--backend", "torch", "--img-size", "64", *argv]) == 2
        assert expected in capsys.readouterr().err


def test_profiles_keep_the_runtimes_own_traces(onnx_64: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for backend, artifact in (("onnxruntime", onnx_64), ("torch", None)):
        record = measure("fat_b0", backend, img_size=64, runs=2, warmup=0, artifact=artifact, profile_runs=2,
                         trace_dir=tmp_path, fresh_process=False)
        assert record.op_profile is not None
        trace = Path(record.op_profile["trace"])
        assert trace == tmp_path / f"fat_b0_{backend}_fp32.trace.json"
        events = json.loads(trace.read_text())
        events = events["traceEvents"] if isinstance(events, dict) else events  # torch wraps them, ORT does not
        assert any(event.get("ph") == "X" and "dur" in event for event in events)  # Chrome trace complete events
    for argv, expected in ((["--trace", str(tmp_path)], "add --profile"),
                           (["--profile", "--trace", str(tmp_path / "missing")], "not a folder")):
        assert fat_latency(["--model", "fat_b0", "--backend", "torch", "--img-size", "64", *argv]) == 2
        assert expected in capsys.readouterr().err
