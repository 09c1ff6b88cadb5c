"""``fat-export``: export registered models to ONNX / Core ML / TFLite, verified against PyTorch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fat_deploy.cli.common import quiet, run_cli, terminal
from fat_deploy.contract.formats import PRECISIONS, QUANTIZED, ExportFormat, ExportRequest
from fat_deploy.environment import available_cores, check_input_budget
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters.api import (
    CALIBRATED,
    FAILED,
    NOT_VERIFIED,
    PASSED,
    Artifact,
    check_arm64,
    check_calibration_folder,
    check_request_options,
    read_labels,
    resolve_img_size,
)
from fat_deploy.exporters.bundle import bundle_staging, check_bundle_target, place_bundle, write_bundle_files
from fat_deploy.exporters.jobs import ExportJob, run_exports
from fat_deploy.exporters.manifest import manifest_path_for
from fat_deploy.exporters.options import all_option_fields, is_set, option_kind, options_for
from fat_deploy.exporters.placement import check_targets, prepare_output_dir
from fat_deploy.models.registry import create_model, get_spec, output_classes
from fat_deploy.precision import parse_precision
from fat_deploy.registry import formats, get_format, list_formats

PROG = "fat-export"


def bundle_platforms() -> str:
    """``android: tflite, ort; ios: coreml, executorch; web: onnx``, from the registered formats."""
    platforms: dict[str, list[str]] = {}
    for fmt in formats().values():
        if fmt.bundle_platform:
            platforms.setdefault(fmt.bundle_platform, []).append(fmt.name)
    return "; ".join(f"{platform}: {', '.join(names)}" for platform, names in sorted(platforms.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=f"Export a model to {', '.join(list_formats())}; every artifact is run in its "
        "runtime and compared with PyTorch before it is put in place.",
    )
    parser.add_argument("--model", required=True, help="registered model name, e.g. fat_b0")
    parser.add_argument("--format", nargs="+", metavar="FORMAT",
                        help=f"{', '.join(list_formats())} or all (several allowed; default onnx, with --bundle all)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], metavar="PRECISION",
                        help=f"one or more of {', '.join(PRECISIONS)} (default fp32)")
    parser.add_argument("--checkpoint", help="weights: official training checkpoint, state_dict or .safetensors")
    parser.add_argument("--img-size", nargs="+", type=int, metavar="PX", help="input size: N or H W (default: the model's)")
    parser.add_argument("--out", help="output folder (default ./exports)")
    parser.add_argument("--bundle", metavar="DIR",
                        help=f"write what apps need instead, one folder per platform ({bundle_platforms()}), each "
                             "with labels.txt and a README with the input contract and snippets; placed only if every "
                             "file passes")
    parser.add_argument("--batch", type=int, default=1, help="static batch size (default 1)")
    parser.add_argument("--jobs", type=int, metavar="N", help="exports at once, each in its own process (default: one "
                        "per CPU core, at most one per file; 1: one after the other in this process)")
    parser.add_argument("--labels", help="class names, one per line, one per class (default: ImageNet-1k); the Core ML "
                        "classifier's names, and in every manifest")
    for name, option in all_option_fields().items():  # each runtime's typed options, and the quantization ones
        flag, kind = str(option.metadata["flag"]), option_kind(option)
        if kind == "switch":
            parser.add_argument(flag, dest=name, action="store_true", help=option.metadata["help"])
        else:
            parser.add_argument(flag, dest=name, type=int if kind == "int" else str, nargs="+" if kind == "list" else None,
                                choices=option.metadata["choices"], metavar=option.metadata["metavar"],
                                help=option.metadata["help"])
    parser.add_argument("--eval-dir", metavar="DIR",
                        help="labeled images, one subfolder per class: top-1/top-5 of the model and of every "
                             "artifact; a quantized artifact is judged by its top-1 drop")
    parser.add_argument("--eval-map", metavar="FILE",
                        help="JSON {folder: class index} for --eval-dir (default: folders named as labels or indices)")
    parser.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                        help="top-1 points an artifact may lose on --eval-dir (default 1.0)")
    parser.add_argument("--no-accuracy-search", action="store_true",
                        help="a quantized file over --max-accuracy-drop fails as it is (default: its worst layers, "
                             "as --explain ranks them, are kept float until it holds, where the format can)")
    parser.add_argument("--no-deploy", action="store_true", help="export the faithful model, not the deploy form")
    parser.add_argument("--no-verify", action="store_true", help="skip running the artifact (status: exported-not-verified)")
    parser.add_argument("--arm64", action="store_true",
                        help="also run each verified file with the aarch64 build of its runtime on an emulated "
                             "Cortex-A76 (qemu user mode; make arm64-root first) and compare with PyTorch")
    parser.add_argument("--force", action="store_true", help="overwrite existing artifacts")
    parser.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the converters' own progress bars, logs and warnings")
    return parser


def _plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(format, precision) pairs to export, all checked before any work starts."""
    every = "all" in args.format
    formats = list_formats() if every else list(dict.fromkeys(args.format))
    if unknown := [name for name in formats if name not in list_formats()]:
        raise FatDeployError(f"unknown format {unknown[0]!r}: choose from {', '.join(list_formats())} or all")
    plan = []
    for name in formats:
        fmt = get_format(name)
        if args.bundle and fmt.bundle_platform is None:
            raise FatDeployError(f"--bundle: format {name} has no app platform")
        for precision in dict.fromkeys(args.precision):
            if every and precision in PRECISIONS and precision not in fmt.precisions:
                continue  # 'all' means every format that has this precision
            check_request_options(fmt, precision, _format_options(args, fmt, precision, every))
            plan.append((name, precision))
    if not plan:
        raise FatDeployError(f"no format supports precision {', '.join(args.precision)}")
    return plan


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The runtime and quantization options given on the command line (left-out ones are not passed)."""
    return {name: getattr(args, name) for name in all_option_fields() if is_set(getattr(args, name))}


def _format_options(args: argparse.Namespace, fmt: ExportFormat, precision: str, every: bool = True) -> dict[str, Any]:
    """The options one export gets: the given ones its format has ('all' drops the others), its app-ready form's
    options with --bundle, and, when several precisions are asked for, the quantization options only for the
    precisions they apply to (the plan still refuses them if no precision takes them)."""
    given = _given_options(args)
    options = options_for(fmt, given) if every or args.bundle else given
    if len(set(args.precision)) > 1:
        applies = {"calibration": CALIBRATED, "calibration_size": CALIBRATED, "calibration_method": CALIBRATED,
                   "keep_float": QUANTIZED, "explain": QUANTIZED}
        for name, modes in applies.items():
            if name in options and precision not in modes and any(p in modes for p in args.precision):
                del options[name]
    return {**options, **fmt.bundle_options} if args.bundle else options


def _table(artifacts: list[Artifact]) -> Table:
    table = Table(title="fat-export summary (compared with the fp32 PyTorch model)")
    numeric = ("size MB", "x float size", "x float speed", "max abs diff", "cosine", "top-1 agree", "top-1 %",
               "seconds")
    for column in ("format", "precision", "status", *numeric, "artifact / reason"):
        table.add_column(column, justify="right" if column in numeric else "left")
    style = {PASSED: "green", NOT_VERIFIED: "yellow", FAILED: "red"}
    for a in artifacts:
        c = a.comparison or {}
        label = f" ({c['source']})" if c.get("source") in ("fp16 proxy", "simulated") else ""
        table.add_row(
            a.format, a.precision, f"[{style[a.status]}]{a.status}[/]",
            f"{a.size_bytes / 1e6:.2f}" if a.size_bytes else "-",
            f"{a.size_bytes / a.cost['float_size_bytes']:.2f}" if a.size_bytes and "float_size_bytes" in a.cost else "-",
            _speed(a.cost["latency"]["speedup"]) if "latency" in a.cost else "-",
            f"{c['max_abs_diff']:.2e}{label}" if "max_abs_diff" in c else "-",
            f"{c['cosine_min']:.6f}" if "cosine_min" in c else "-",
            f"{c['top1_agreement']:.0%}" if "top1_agreement" in c else "-",
            f"{c['top1']:.1f} ({-c['top1_drop_points']:+.1f})" if "top1" in c else "-",
            f"{a.seconds:.1f}",
            a.error or "; ".join([str(a.path), *a.notes]),
        )
    return table


def _speed(speedup: float) -> str:
    """The quantized artifact's speed relative to its float version; slower than float is marked."""
    return f"[red]{speedup:.2f} (slower)[/]" if speedup < 1.0 else f"{speedup:.2f}"


def _explain_table(artifact: Artifact) -> Table:
    table = Table(title=f"{artifact.model} {artifact.format} {artifact.precision}: layers ranked by the error they "
                        "add (held-out images; lower SQNR = worse)")
    for column in ("layer (for --keep-float)", "op", "added SQNR dB", "output SQNR dB", "input SQNR dB"):
        table.add_column(column, justify="left" if column in ("layer (for --keep-float)", "op") else "right")
    def fmt(value: float | None) -> str:
        return "exact" if value is None else f"{value:.1f}"
    for layer in artifact.explain or []:
        table.add_row(layer["name"], layer["op_type"], fmt(layer["added_db"]), fmt(layer["sqnr_db"]),
                      fmt(layer["input_sqnr_db"]))
    return table


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    with quiet(args.verbose):
        return _export_all(args)


def _export_all(args: argparse.Namespace) -> int:
    # Everything that can be wrong with the request is checked before the first conversion.
    if args.bundle and args.out:
        raise FatDeployError("--bundle DIR is the output; leave --out out")
    args.format = args.format or (["all"] if args.bundle else ["onnx"])
    spec = get_spec(args.model)
    plan = _plan(args)
    img_size = resolve_img_size(args.img_size, spec)
    if args.batch < 1:
        raise FatDeployError(f"--batch must be at least 1, got {args.batch}")
    check_input_budget(args.batch, img_size)
    if args.jobs is not None and args.jobs < 1:
        raise FatDeployError(f"--jobs must be at least 1, got {args.jobs}")

    model = create_model(spec.name, checkpoint=args.checkpoint)
    if args.labels:
        read_labels(args.labels, output_classes(model))
    if args.calibration and any(precision in CALIBRATED for _, precision in plan):
        check_calibration_folder(args.calibration)
    if args.arm64:
        for fmt_name, precision in plan:
            fmt = get_format(fmt_name)
            check_arm64(fmt, ExportRequest(model_name=spec.name, spec=spec, reference=model, model=model,
                                           img_size=img_size, precision=parse_precision(precision), batch=args.batch,
                                           options=_format_options(args, fmt, precision)), not args.no_verify)
    if args.bundle:
        check_bundle_target(Path(args.bundle), args.force)
        with bundle_staging(Path(args.bundle)) as built:
            artifacts = _run_plan(args, spec.name, plan, img_size, built)
            if not any(a.status == FAILED for a in artifacts):
                _finish_bundle(args, spec.name, artifacts, built)
            else:
                for artifact in artifacts:  # their staging folder goes with this block
                    if artifact.path is not None:
                        artifact.path = artifact.manifest_path = None
                        artifact.notes.append("not placed: the bundle is written only when every file passes")
    else:
        out_dir = prepare_output_dir(args.out or "exports")
        for fmt_name, precision in plan:
            fmt = get_format(fmt_name)
            target = out_dir / fmt.artifact_name(spec.name, parse_precision(precision),
                                                 _format_options(args, fmt, precision))
            check_targets(target, manifest_path_for(target), args.force, fmt.is_artifact)
        artifacts = _run_plan(args, spec.name, plan, img_size, out_dir)
    return _report(args, artifacts)


def _run_plan(args: argparse.Namespace, model: str, plan: list[tuple[str, str]], img_size: tuple[int, int],
              out_dir: Path) -> list[Artifact]:
    """Export each (format, precision) into ``out_dir`` (its platform folder there with --bundle), ``--jobs`` at
    once."""
    jobs = []
    for fmt_name, precision in plan:
        fmt = get_format(fmt_name)
        jobs.append(ExportJob(model, fmt_name, precision, out_dir / str(fmt.bundle_platform) if args.bundle else out_dir,
                              dict(checkpoint=args.checkpoint, img_size=img_size, batch=args.batch, labels=args.labels,
                                   eval_dir=args.eval_dir, eval_map=args.eval_map,
                                   max_accuracy_drop=args.max_accuracy_drop, deploy=not args.no_deploy,
                                   accuracy_search=not args.no_accuracy_search,
                                   verify=not args.no_verify, arm64=args.arm64, force=args.force,
                                   **_format_options(args, fmt, precision))))
    err = Console(file=terminal().err)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        labels = [f"{model} → {job.format} {job.precision}" for job in jobs]
        tasks = [progress.add_task(f"{label}: waiting", total=None, start=False) for label in labels]

        def stage(index: int, message: str) -> None:
            progress.start_task(tasks[index])  # the clock runs from the job's first stage (no-op once started)
            progress.update(tasks[index], description=f"{labels[index]}: {message}")

        def done(index: int, artifact: Artifact) -> None:
            progress.update(tasks[index], description=f"{labels[index]}: {artifact.status}", total=1, completed=1)

        workers = args.jobs if args.jobs is not None else min(len(jobs), available_cores())
        return run_exports(jobs, workers, stage, done)


def _finish_bundle(args: argparse.Namespace, model: str, artifacts: list[Artifact], built: Path) -> None:
    """Labels, READMEs and the index, then the bundle into place; artifact paths then point into it."""
    target = Path(args.bundle)
    items = []
    for artifact in artifacts:
        assert artifact.path is not None and artifact.manifest_path is not None
        manifest = json.loads(artifact.manifest_path.read_text(encoding="utf-8"))
        items.append((get_format(artifact.format), artifact.path, manifest))
    write_bundle_files(built, model, items, items[0][2]["labels"]["names"])
    place_bundle(built, target, args.force)
    for artifact in artifacts:
        assert artifact.path is not None and artifact.manifest_path is not None
        artifact.path = target / artifact.path.relative_to(built)
        artifact.manifest_path = target / artifact.manifest_path.relative_to(built)
    platforms = sorted({str(get_format(a.format).bundle_platform) for a in artifacts})
    print(f"{PROG}: bundle written to {target} ({', '.join(platforms)})", file=terminal().err)


def _report(args: argparse.Namespace, artifacts: list[Artifact]) -> int:
    err = Console(file=terminal().err)
    explained = [a for a in artifacts if a.explain]
    if args.json:
        err.print(_table(artifacts))
        for artifact in explained:
            err.print(_explain_table(artifact))
        json.dump([a.as_dict() for a in artifacts], terminal().out, indent=2)
        terminal().out.write("\n")
    else:
        console = Console(file=terminal().out)
        console = console if console.is_terminal else Console(file=terminal().out, width=200)
        console.print(_table(artifacts))
        for artifact in explained:
            console.print(_explain_table(artifact))
    failed = any(a.status == FAILED for a in artifacts)
    if failed and not args.verbose:
        print(f"{PROG}: converters' own output was hidden; run again with --verbose to see it", file=terminal().err)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
