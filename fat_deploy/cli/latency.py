"""``fat-latency``: time models on PyTorch and every registered runtime (onnxruntime, TFLite, ExecuTorch, Core ML)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fat_deploy.cli.common import quiet, run_cli, terminal
from fat_deploy.common.inputs import check_model_input
from fat_deploy.errors import FatDeployError
from fat_deploy.latency import charts
from fat_deploy.latency import table as paper_table
from fat_deploy.latency.harness import TIMED, Measurement, check_settings, measure
from fat_deploy.latency.report import (
    append_jsonl,
    csv_text,
    environment_lines,
    markdown,
    read_jsonl,
    rich_table,
)
from fat_deploy.models.registry import get_spec, list_models
from fat_deploy.registry import backends as registered_backends
from fat_deploy.registry import check_device, get_backend, known_devices

PROG = "fat-latency"
DEFAULT_MODELS = ("fat_b0", "fat_b1", "fat_b2")
THROUGHPUT_BATCH = 32


def devices_by_backend() -> str:
    """``cuda: torch, onnxruntime; gpu: coreml`` for the devices beyond the CPU, from the registered backends."""
    return "; ".join(f"{device}: {', '.join(b.name for b in registered_backends().values() if device in b.devices)}"
                     for device in known_devices() if device != "cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=f"Latency of models per runtime. Timed: {TIMED}.")
    parser.add_argument("--model", nargs="+", help="model names or 'all' (default: fat_b0 fat_b1 fat_b2; with --table: "
                        "the paper table's 12 rows)")
    parser.add_argument("--backend", nargs="+", default=["onnxruntime"],
                        help=f"{', '.join(registered_backends())} (several allowed)")
    parser.add_argument("--device", default="cpu",
                        help=f"one of {', '.join(known_devices())} ({devices_by_backend()})")
    parser.add_argument("--threads", type=int, default=1, help="intra-op / interpreter threads (default 1)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 1; 32 with --throughput)")
    parser.add_argument("--img-size", nargs="+", type=int, metavar="PX", help="N or H W (default: each model's)")
    parser.add_argument("--precision", default="fp32", help="fp32 or fp16")
    parser.add_argument("--checkpoint", help="weights to load (latency does not depend on them)")
    parser.add_argument("--artifact", help="time this exported file instead of exporting (one model, one backend)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs after the first (default 10)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs, at least (default 50)")
    parser.add_argument("--min-seconds", type=float, default=0.0, help="keep timing for at least this long")
    parser.add_argument("--throughput", action="store_true",
                        help=f"large-batch images/s (batch {THROUGHPUT_BATCH} unless --batch)")
    parser.add_argument("--no-deploy", action="store_true", help="time the faithful model, not the deploy form (torch)")
    parser.add_argument("--channels-last", action="store_true", help="torch: channels-last memory format")
    parser.add_argument("--cache-dir", help="where exported artifacts are kept (default $FAT_DEPLOY_CACHE, else "
                        "$XDG_CACHE_HOME/fat-deploy, ~/.cache/fat-deploy)")
    parser.add_argument("--json", metavar="PATH", help="append one JSON line per measurement")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    parser.add_argument("--csv", metavar="PATH", help="write the table as CSV")
    parser.add_argument("--merge", nargs="+", metavar="JSONL", help="only merge earlier results into one table")
    parser.add_argument("--table", action="store_true",
                        help="regenerate the paper's efficiency table: every row at its paper input size, batch 1, "
                             "beside the paper's numbers (--backend lists the CPU runtimes, one column each)")
    parser.add_argument("--profile", nargs="?", type=int, const=20, default=0, metavar="RUNS",
                        help="after timing, a per-op profile from the runtime's own profiler over RUNS runs "
                             "(default 20): " + ", ".join(f"{backend.name} ({backend.profiler})" for backend in
                                                         registered_backends().values() if backend.profiler)
                             + "; other runtimes say why they have none")
    parser.add_argument("--no-fresh-process", action="store_true",
                        help="skip the second measurement in a process that imports only the runtime (load ms, "
                             "cold ms from process start to first result, load MB and run MB over that process's "
                             "baseline)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time image to label on JPEG photos, stage by stage: decode, preprocess, inference, "
                             "postprocess for the plain file, and the format's app-ready form (--mediapipe TFLite "
                             "through MediaPipe's ImageClassifier, --image-bytes ONNX through onnxruntime-extensions)")
    parser.add_argument("--verbose", action="store_true", help="also show converters' and runtimes' own output")
    parser.add_argument("--plot", nargs="+", metavar="PATH", help="with --table: latency-vs-top-1 plot (.png/.svg)")
    parser.add_argument("--profile-chart", nargs="+", metavar="PATH",
                        help="with --profile: stacked bars of ms per run by op type, one per runtime (.png/.svg)")
    parser.add_argument("--trace", metavar="DIR",
                        help="with --profile: also write the runtime's Chrome/Perfetto trace into DIR where its "
                             "profiler makes one (onnxruntime, torch; open in chrome://tracing or ui.perfetto.dev)")
    parser.add_argument("--cost-plot", nargs="+", metavar="PATH",
                        help="latency against the memory to load each file (fresh process), marker area the file "
                             "size (.png/.svg; with --table too)")
    return parser


def _models(names: list[str]) -> list[str]:
    if "all" in names:
        return list_models()
    return [get_spec(name).name for name in dict.fromkeys(names)]


def _write_outputs(args: argparse.Namespace, records: list[dict]) -> None:  # type: ignore[type-arg]
    for path, text in ((args.markdown, markdown), (args.csv, csv_text)):
        if path:
            _write(path, text(records))


def _check_writable(paths: Sequence[str]) -> None:
    """Every output path, before any measuring: its folder exists and is writable, and it is not a folder itself or
    a file that cannot be written (minutes of timing are not lost to a typo)."""
    for path in paths:
        target = Path(path)
        folder = target.resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise FatDeployError(f"cannot write {path}: folder {folder} is missing or not writable")
        if target.is_dir():
            raise FatDeployError(f"cannot write {path}: it is a folder")
        if target.exists() and not os.access(target, os.W_OK):
            raise FatDeployError(f"cannot write {path}: the file is not writable")


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise FatDeployError(f"cannot write {path}: {error.strerror or error}") from None


def _append(path: str, records: list[dict]) -> None:  # type: ignore[type-arg]
    try:
        append_jsonl(path, records)
    except OSError as error:
        raise FatDeployError(f"cannot write {path}: {error.strerror or error}") from None


def _progress(err: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err)


def op_profile_tables(record: dict) -> list:  # type: ignore[type-arg]
    """The per-op profile of one record as two tables (by op type, slowest ops), or the reason it has none."""
    profile, label = record["op_profile"], f"{record['model']} on {record['backend']} ({record['device']})"
    if "unavailable" in profile:
        return [f"per-op profile, {label}: none: {profile['unavailable']}"]
    by_type = Table(title=f"per-op profile, {label}: {profile['total_ms_per_run']:.2f} ms of ops per run "
                          f"({profile['source']}, {profile['runs']} runs, after timing)")
    for column in ("op type", "ms/run", "share", "ops/run"):
        by_type.add_column(column, justify="left" if column == "op type" else "right")
    for row in profile["by_op_type"]:
        by_type.add_row(row["op_type"], f"{row['ms_per_run']:.3f}", f"{row['share']:.1%}", f"{row['count_per_run']:g}")
    slowest = Table(title=f"slowest ops, {label}")
    for column in ("op", "type", "ms/run", "share"):
        slowest.add_column(column, justify="right" if column in ("ms/run", "share") else "left")
    for row in profile["top_ops"]:
        slowest.add_row(row["name"], row["op_type"], f"{row['ms_per_run']:.3f}", f"{row['share']:.1%}")
    return [by_type, slowest]


def _table_main(args: argparse.Namespace, console: Console) -> int:

    if args.artifact or args.img_size or args.batch or args.throughput or args.precision != "fp32":
        raise FatDeployError("--table measures every row at its paper input size, batch 1, fp32 (and fp16 "
                             "throughput on CUDA); drop --artifact/--img-size/--batch/--throughput/--precision")
    if args.profile:
        raise FatDeployError("--profile profiles single measurements; run it without --table")
    if args.device != "cpu":
        raise FatDeployError("--table times the CPU columns and, where CUDA exists, the GPU columns itself; drop --device")
    if args.checkpoint:
        raise FatDeployError("--table times every model with random weights (latency does not depend on them); "
                             "drop --checkpoint")
    if args.profile_chart:
        raise FatDeployError("--profile-chart draws --profile's per-op times: run it without --table")
    _check_image_names(args)
    rows_wanted = paper_table.table_models()
    if args.model and "all" not in args.model:
        wanted = {get_spec(name).name for name in args.model}
        known = {name for _, name in rows_wanted}
        if outside := sorted(wanted - known):
            raise FatDeployError(f"not in the paper's table: {', '.join(outside)}; its rows are {', '.join(sorted(known))}")
        rows_wanted = [(label, name) for label, name in rows_wanted if name in wanted]
    chosen_backends = [get_backend(name).name for name in dict.fromkeys(args.backend)]
    check_settings(args.threads, 1, args.warmup, args.runs, args.min_seconds)
    _check_writable([p for p in (args.json, args.markdown, args.csv, *(args.plot or []), *(args.cost_plot or [])) if p])
    names = [name for _, name in rows_wanted]
    err = Console(file=terminal().err)
    if args.merge:
        records = [r for r in read_jsonl(args.merge) if r["model"] in names]
        profiles = paper_table.profiles_from_records(records)
        profiles.update(paper_table.profile_models(n for n in names if n not in profiles))
    else:
        err.print("random weights: latency does not depend on them; top-1 is the paper's (no ImageNet here)")
        jobs = paper_table.plan(names, chosen_backends)
        records = []
        with _progress(err) as progress:
            task = progress.add_task("profiling params and MACs", total=len(jobs) + 1)
            profiles = paper_table.profile_models(names)
            progress.advance(task)
            for job in jobs:
                progress.update(task, description=job.describe())
                record = measure(
                    job.model, job.backend, device=job.device, threads=args.threads, batch=job.batch,
                    precision=job.precision, warmup=args.warmup, runs=args.runs,
                    min_seconds=args.min_seconds, cache_dir=args.cache_dir,
                ).as_dict()
                record["profile"] = asdict(profiles[job.model])
                records.append(record)
                progress.advance(task)
    rows = paper_table.build_rows(records, profiles, chosen_backends, rows_wanted)
    env = [*environment_lines([r for r in records if r["device"] == "cpu"]),
           f"{args.threads} thread(s), batch 1, median of >= {args.runs} timed runs after {args.warmup} warm-up"]
    console.print(paper_table.rich_efficiency_table(
        rows, chosen_backends, "FAT efficiency table, regenerated (ours) beside the paper's numbers (dim)"))
    for line in env:
        console.print(f"environment: {line}")
    for note in paper_table.footnotes(rows):
        console.print(note)
    if args.json and not args.merge:
        _append(args.json, records)
    if args.markdown:
        _write(args.markdown, paper_table.markdown_table(rows, chosen_backends, env))
    if args.csv:
        _write(args.csv, paper_table.csv_table(rows, chosen_backends))
    if args.plot:
        paper_table.plot(rows, chosen_backends[0], args.plot, environment=env[0] if env else "")
    _draw(args, records)
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    with quiet(args.verbose):
        return _measure_all(args)


def _measure_all(args: argparse.Namespace) -> int:
    console = Console(file=terminal().out)
    console = console if console.is_terminal else Console(file=terminal().out, width=220)
    if args.table:
        return _table_main(args, console)
    if args.plot:
        raise FatDeployError("--plot draws the paper table: use it with --table")
    args.model = args.model or list(DEFAULT_MODELS)
    if args.merge and args.profile:
        raise FatDeployError("--merge only rebuilds tables from stored records; --profile needs a measurement")
    if args.merge:  # the charts are drawn from the stored records too
        _check_image_names(args)
        _check_writable([p for p in (*(args.profile_chart or []), *(args.cost_plot or [])) if p])
        records = read_jsonl(args.merge)
        console.print(rich_table(records, f"fat-latency: {len(records)} merged measurements"))
        for line in environment_lines(records):
            console.print(f"environment: {line}")
        _write_outputs(args, records)
        _draw(args, records)
        return 0
    models = _models(args.model)
    chosen_backends = [get_backend(name).name for name in dict.fromkeys(args.backend)]
    check_device(args.device)
    batch = args.batch if args.batch is not None else (THROUGHPUT_BATCH if args.throughput else 1)
    check_settings(args.threads, batch, args.warmup, args.runs, args.min_seconds)
    if args.artifact:
        if len(models) != 1 or len(chosen_backends) != 1:
            raise FatDeployError("--artifact times one file: give exactly one --model and one --backend")
        check_model_input(Path(args.artifact))  # a FIFO, device or 3 GB file is refused before any work
    if args.profile_chart and not args.profile:
        raise FatDeployError("--profile-chart draws the per-op profile: add --profile")
    if args.trace and not args.profile:
        raise FatDeployError("--trace keeps the profiler's trace: add --profile")
    if args.trace and not Path(args.trace).is_dir():
        raise FatDeployError(f"--trace {args.trace}: not a folder")
    _check_image_names(args)
    _check_writable([p for p in (args.json, args.markdown, args.csv, *(args.profile_chart or []),
                                 *(args.cost_plot or [])) if p])
    img_size = tuple(args.img_size) if args.img_size else None
    results: list[Measurement] = []
    err = Console(file=terminal().err)
    with _progress(err) as progress:
        task = progress.add_task("measuring", total=len(models) * len(chosen_backends))
        for model in models:
            for backend in chosen_backends:
                progress.update(task, description=f"{model} on {backend} ({args.device}, {args.threads} thread(s))")
                results.append(measure(
                    model, backend, device=args.device, threads=args.threads, batch=batch, img_size=img_size,
                    precision=args.precision, checkpoint=args.checkpoint, artifact=args.artifact,
                    warmup=args.warmup, runs=args.runs, min_seconds=args.min_seconds,
                    deploy=not args.no_deploy, channels_last=args.channels_last, cache_dir=args.cache_dir,
                    profile_runs=args.profile, fresh_process=not args.no_fresh_process,
                    end_to_end=args.end_to_end, trace_dir=args.trace,
                ))
                progress.advance(task)
    records = [r.as_dict() for r in results]
    console.print(rich_table(records, "fat-latency (median is the headline; random weights, latency only)"))
    for line in environment_lines(records):
        console.print(f"environment: {line}")
    console.print(f"timed: {TIMED}; load/cold/MB columns: a fresh process importing only the runtime "
                  "(cold = process start to first result)")
    if args.end_to_end:
        console.print(end_to_end_table(records))
    for record in records:
        if record.get("op_profile"):
            for line in op_profile_tables(record):
                console.print(line)
    if args.json:
        _append(args.json, records)
    _write_outputs(args, records)
    _draw(args, records)
    return 0


def _check_image_names(args: argparse.Namespace) -> None:
    for flag, paths in (("--plot", args.plot), ("--profile-chart", args.profile_chart), ("--cost-plot", args.cost_plot)):
        for path in paths or []:
            if Path(path).suffix.lower() not in (".png", ".svg", ".pdf"):
                raise FatDeployError(f"{flag} {path}: use a .png, .svg or .pdf file name")


def _draw(args: argparse.Namespace, records: list[dict[str, Any]]) -> None:
    """--profile-chart and --cost-plot, saying what could not be drawn."""
    environment = "; ".join(environment_lines(records))[:200]
    if args.profile_chart and charts.op_profile_chart(records, args.profile_chart, environment) == 0:
        terminal().err.write("fat-latency: --profile-chart: no record has a per-op profile (see the reasons above); "
                             "the chart is empty\n")
    if args.cost_plot and charts.cost_plot(records, args.cost_plot, environment) == 0:
        terminal().err.write("fat-latency: --cost-plot: no record has fresh-process memory (torch runs no file; "
                             "--no-fresh-process skips it); the plot is empty\n")


def end_to_end_table(records: list[dict[str, Any]]) -> Table:
    """--end-to-end: one row per file form, each stage's median ms and share of the total."""
    table = Table(title="image to label (JPEG photos, median ms per photo, share of the total)", title_justify="left")
    for column in ("model", "backend", "file", "client", "stages", "total ms", "the call does itself"):
        table.add_column(column, justify="right" if column == "total ms" else "left")
    for record in records:
        for form in record.get("end_to_end") or []:
            stages = ", ".join(f"{s['stage']} {s['ms']:.1f} ({s['share']:.0%})" for s in form["stages"])
            table.add_row(record["model"], record["backend"], form["form"], form["client"], stages,
                          f"{form['total_ms']:.1f}", form["inside"] or "-")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
