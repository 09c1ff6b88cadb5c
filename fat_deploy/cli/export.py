"""``fat-export``: export registered models to ONNX / Core ML / TFLite, verified against PyTorch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

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
from fat_deploy.exporters.placement import check_targets, prepare_output_dir
from fat_deploy.exporters.coreml import DEFAULT_TARGET, DEPLOYMENT_TARGETS, INPUT_KINDS
from fat_deploy.exporters.registry import PRECISIONS, get_format, list_formats
from fat_deploy.models.registry import get_spec

PROG = "fat-export"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a model to ONNX / Core ML / TFLite; every artifact is run in its "
        "runtime and compared with PyTorch before it is put in place.",
    )
    parser.add_argument("--model", required=True, help="registered model name, e.g. fat_b0")
    parser.add_argument("--format", nargs="+", default=["onnx"], metavar="FORMAT",
                        help="onnx, coreml, tflite or all (several allowed; default onnx)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], metavar="PRECISION",
                        help=f"one or more of {', '.join(PRECISIONS)} (default fp32)")
    parser.add_argument("--checkpoint", help="weights: official training checkpoint, state_dict or .safetensors")
    parser.add_argument("--img-size", nargs="+", type=int, metavar="PX", help="input size: N or H W (default: the model's)")
    parser.add_argument("--out", default="exports", help="output folder (default ./exports)")
    parser.add_argument("--batch", type=int, default=1, help="static batch size (default 1)")
    parser.add_argument("--dynamic-batch", action="store_true", help="ONNX: dynamic batch axis")
    parser.add_argument("--nhwc", action="store_true", help="TFLite: NHWC input layout")
    parser.add_argument("--labels", help="class names, one per line, one per class (default: ImageNet-1k); the Core ML "
                        "classifier's names, and in every manifest")
    parser.add_argument("--minimum-deployment-target", choices=DEPLOYMENT_TARGETS,
                        help=f"Core ML: minimum deployment target (default {DEFAULT_TARGET})")
    parser.add_argument("--coreml-input", choices=INPUT_KINDS,
                        help="Core ML: 'image' (RGB ImageType + classifier, default) or 'tensor' (normalised NCHW, logits)")
    parser.add_argument("--calibration", metavar="DIR", help="int8-static / w8a8: folder of calibration images (default: shipped sample photos)")
    parser.add_argument("--calibration-size", type=int, metavar="N", help="int8-static / w8a8: calibration samples (default 32)")
    parser.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), help="int8-static: calibrator (default minmax)")
    parser.add_argument("--keep-float", nargs="+", metavar="PATTERN", help="quantized onnx/tflite: keep layers whose name matches (substring or glob; see --explain) in float")
    parser.add_argument("--int8-io", action="store_true",
                        help="tflite int8-static: int8 input/output tensors (default: float32 I/O, drops into apps unchanged)")
    parser.add_argument("--explain", action="store_true",
                        help="quantized modes (onnx, tflite): rank layers by the error they add, on held-out images")
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
    options = {"dynamic_batch": args.dynamic_batch, "nhwc": args.nhwc,
               "minimum_deployment_target": args.minimum_deployment_target,
               "coreml_input": args.coreml_input, "calibration": args.calibration,
               "calibration_size": args.calibration_size, "calibration_method": args.calibration_method,
               "keep_float": args.keep_float, "explain": args.explain, "int8_io": args.int8_io}
    plan = []
    for name in formats:
        fmt = get_format(name)
        for precision in dict.fromkeys(args.precision):
            if every and precision in PRECISIONS and precision not in fmt.precisions:
                continue  # 'all' means every format that has this precision
            wanted = {k: v for k, v in options.items() if not every or k in fmt.supported_options}
            check_request_options(fmt, precision, wanted)
            plan.append((name, precision))
    if not plan:
        raise FatDeployError(f"no format supports precision {', '.join(args.precision)}")
    return plan


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
            f"{a.cost['latency']['speedup']:.2f}" if "latency" in a.cost else "-",
            f"{c['max_abs_diff']:.2e}{label}" if "max_abs_diff" in c else "-",
            f"{c['cosine_min']:.6f}" if "cosine_min" in c else "-",
            f"{c['top1_agreement']:.0%}" if "top1_agreement" in c else "-",
            f"{a.seconds:.1f}",
            a.error or "; ".join([str(a.path), *a.notes]),
        )
    return table


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
        target = out_dir / get_format(fmt_name).artifact_name(spec.name, precision, {"coreml_input": args.coreml_input})
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

            artifact = export(
                spec.name, fmt_name, precision, args.out, checkpoint=args.checkpoint,
                img_size=img_size, batch=args.batch, dynamic_batch=args.dynamic_batch and fmt_name == "onnx",
                nhwc=args.nhwc and fmt_name == "tflite", labels=args.labels,
                minimum_deployment_target=args.minimum_deployment_target if fmt_name == "coreml" else None,
                coreml_input=args.coreml_input if fmt_name == "coreml" else None,
                calibration=args.calibration, calibration_size=args.calibration_size,
                calibration_method=args.calibration_method,
                keep_float=args.keep_float if fmt_name != "coreml" else None,
                explain=args.explain and fmt_name != "coreml", int8_io=args.int8_io and fmt_name == "tflite",
                deploy=not args.no_deploy, verify=not args.no_verify, force=args.force, on_stage=stage,
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
