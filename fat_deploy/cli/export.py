"""``fat-export``: export registered models to ONNX / Core ML / TFLite, verified against PyTorch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fat_deploy.cli.common import quiet, run_cli, terminal
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters.api import (
    CALIBRATED,
    FAILED,
    Artifact,
    check_calibration_folder,
    check_request_options,
    export,
    read_labels,
    resolve_img_size,
)
from fat_deploy.exporters.manifest import manifest_path_for
from fat_deploy.exporters.options import all_option_fields, is_set, option_kind, options_for
from fat_deploy.exporters.placement import check_targets, prepare_output_dir
from fat_deploy.exporters.registry import PRECISIONS, get_format, list_formats
from fat_deploy.models.registry import get_spec

PROG = "fat-export"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=f"Export a model to {', '.join(list_formats())}; every artifact is run in its "
        "runtime and compared with PyTorch before it is put in place.",
    )
    parser.add_argument("--model", required=True, help="registered model name, e.g. fat_b0")
    parser.add_argument("--format", nargs="+", default=["onnx"], metavar="FORMAT",
                        help=f"{', '.join(list_formats())} or all (several allowed; default onnx)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], metavar="PRECISION",
                        help=f"one or more of {', '.join(PRECISIONS)} (default fp32)")
    parser.add_argument("--checkpoint", help="weights: official training checkpoint, state_dict or .safetensors")
    parser.add_argument("--img-size", nargs="+", type=int, metavar="PX", help="input size: N or H W (default: the model's)")
    parser.add_argument("--out", default="exports", help="output folder (default ./exports)")
    parser.add_argument("--batch", type=int, default=1, help="static batch size (default 1)")
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
    parser.add_argument("--no-deploy", action="store_true", help="export the faithful model, not the deploy form")
    parser.add_argument("--no-verify", action="store_true", help="skip running the artifact (status: exported-not-verified)")
    parser.add_argument("--force", action="store_true", help="overwrite existing artifacts")
    parser.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the converters' own progress bars, logs and warnings")
    return parser


def _plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(format, precision) pairs to export, all checked before any work starts."""
    every = "all" in args.format
    formats = list_formats() if every else list(dict.fromkeys(args.format))
    options = _given_options(args)
    plan = []
    for name in formats:
        fmt = get_format(name)
        for precision in dict.fromkeys(args.precision):
            if every and precision in PRECISIONS and precision not in fmt.precisions:
                continue  # 'all' means every format that has this precision
            check_request_options(fmt, precision, options_for(fmt, options) if every else options)
            plan.append((name, precision))
    if not plan:
        raise FatDeployError(f"no format supports precision {', '.join(args.precision)}")
    return plan


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The runtime and quantization options given on the command line (left-out ones are not passed)."""
    return {name: getattr(args, name) for name in all_option_fields() if is_set(getattr(args, name))}


def _table(artifacts: list[Artifact]) -> Table:
    table = Table(title="fat-export summary (compared with the fp32 PyTorch model)")
    numeric = ("size MB", "x float size", "x float speed", "max abs diff", "cosine", "top-1 agree", "seconds")
    for column in ("format", "precision", "status", *numeric, "artifact / reason"):
        table.add_column(column, justify="right" if column in numeric else "left")
    style = {"passed": "green", "exported-not-verified": "yellow", FAILED: "red"}
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
    fmt = lambda v: "exact" if v is None else f"{v:.1f}"  # noqa: E731
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
    spec = get_spec(args.model)
    plan = _plan(args)
    img_size = resolve_img_size(args.img_size, spec)
    if args.batch < 1:
        raise FatDeployError(f"--batch must be at least 1, got {args.batch}")
    from fat_deploy.models.registry import create_model, output_classes

    model = create_model(spec.name, checkpoint=args.checkpoint)
    if args.labels:
        read_labels(args.labels, output_classes(model))
    if args.calibration and any(precision in CALIBRATED for _, precision in plan):
        check_calibration_folder(args.calibration)
    out_dir = prepare_output_dir(args.out)
    for fmt_name, precision in plan:
        fmt = get_format(fmt_name)
        target = out_dir / fmt.artifact_name(spec.name, precision, options_for(fmt, _given_options(args)))
        check_targets(target, manifest_path_for(target), args.force)
    err = Console(file=terminal().err)
    artifacts: list[Artifact] = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        for fmt_name, precision in plan:
            label = f"{spec.name} → {fmt_name} {precision}"
            task = progress.add_task(f"{label}: starting", total=None)

            def stage(message: str, task: int = task, label: str = label) -> None:
                progress.update(task, description=f"{label}: {message}")

            options = options_for(get_format(fmt_name), _given_options(args))
            artifact = export(
                spec.name, fmt_name, precision, args.out, checkpoint=args.checkpoint, img_size=img_size,
                batch=args.batch, labels=args.labels, deploy=not args.no_deploy, verify=not args.no_verify,
                force=args.force, on_stage=stage, **options,
            )
            artifacts.append(artifact)
            progress.update(task, description=f"{label}: {artifact.status}", total=1, completed=1)
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
