"""``fat-inspect``: the coverage report of exported files (ops by type, layout transposes, accelerator shares), or
with ``--compare`` the first block where a file departs from PyTorch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fat_deploy.cli.common import quiet, run_cli, terminal
from fat_deploy.common.departure import Departure
from fat_deploy.common.inputs import check_model_input, private_view
from fat_deploy.contract.coverage import Coverage
from fat_deploy.contract.formats import ExportFormat
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters.compare import compare_file
from fat_deploy.registry import formats, get_format

PROG = "fat-inspect"


def build_parser() -> argparse.ArgumentParser:
    suffixes = ", ".join(f"{fmt.suffix} ({fmt.name})" for fmt in formats().values())
    parser = argparse.ArgumentParser(
        prog=PROG, description="What an exported file holds and what each accelerator path would take of it: ops by "
                               "type, layout transposes, XNNPACK / NNAPI / Core ML EP shares (from the runtimes' own "
                               f"tools; paths no tool here can check are named as such). Formats by suffix: {suffixes}.")
    parser.add_argument("paths", nargs="+", metavar="FILE", help="exported files (any fat-export format)")
    parser.add_argument("--format", help="read every FILE as this format instead of going by its suffix")
    parser.add_argument("--ops", type=int, default=12, metavar="N", help="op types to list per file (default 12; 0: all)")
    parser.add_argument("--compare", action="store_true",
                        help="instead of coverage: run each FILE on a sample photo with every intermediate tensor kept "
                             "and name the first block whose output departs from PyTorch (needs the manifest beside "
                             "the file and, with --checkpoint, the checkpoint it was exported from); exit 1 if a block "
                             "departs")
    parser.add_argument("--checkpoint", type=Path, metavar="PTH", help="--compare: the checkpoint FILE was exported from")
    parser.add_argument("--tolerance", type=float, metavar="REL",
                        help="--compare: max relative difference a block may have (default: the precision's tolerance)")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON on stdout")
    parser.add_argument("--verbose", action="store_true", help="show the runtimes' own log lines")
    return parser


def format_of(path: Path, forced: str | None) -> ExportFormat:
    """The export format a file is read as: ``--format``, else its suffix."""
    if forced:
        return get_format(forced)
    matches = [fmt for fmt in formats().values() if path.name.endswith(fmt.suffix)]
    if not matches:
        known = ", ".join(sorted({fmt.suffix for fmt in formats().values()}))
        raise FatDeployError(f"cannot tell the format of {path}: its suffix is not one of {known} (use --format)")
    return max(matches, key=lambda fmt: len(fmt.suffix))


def read_coverage(path: Path, fmt: ExportFormat) -> Coverage:
    """The coverage report of ``path``, or a one-line error (missing file, not a regular file or package, too large,
    reader not installed, unreadable file). The reader sees a private copy of a package, never the user's."""
    if reason := fmt.unavailable_reason():
        raise FatDeployError(f"{path}: {reason}")
    with private_view(path) as view:  # checks the input first (regular files, size), then copies a package
        try:
            report = fmt.coverage(view)
        except Exception as error:  # noqa: BLE001 - a file the runtime's reader rejects is a user error here
            text = " ".join(str(error).replace(str(view), str(path)).split())[:300] or type(error).__name__
            raise FatDeployError(f"{path}: not readable as {fmt.name}: {text}") from None
    if report is None:
        raise FatDeployError(f"{path}: fat-inspect has no reader for {fmt.name} files")
    return report


def report_table(path: Path, report: Coverage, top: int) -> Table:
    transposes = "not visible" if report.layout_transposes is None else str(report.layout_transposes)
    table = Table(title=f"{path.name} ({report.format}): {report.op_count} op{'s' if report.op_count != 1 else ''} in the "
                        f"file, layout transposes: {transposes}",
                  show_header=True, title_justify="left")
    table.add_column("accelerator path")
    table.add_column("takes", justify="right")
    table.add_column("partitions", justify="right")
    table.add_column("left to the fallback kernels / why not checked")
    for entry in report.accelerators:
        if not entry.checked:
            table.add_row(entry.name, "-", "-", f"not checked here: {entry.verdict}")
            continue
        takes = f"{entry.takes}/{entry.total}" if entry.takes is not None else ("all" if not entry.outside else "-")
        outside = ", ".join(f"{op} x{n}" for op, n in entry.outside.items()) or "nothing"
        table.add_row(entry.name, takes, str(entry.partitions if entry.partitions is not None else "-"), outside)
    ops = list(report.ops.items())
    shown = ops if top == 0 else ops[:top]
    more = f" (+{len(ops) - len(shown)} more types)" if len(shown) < len(ops) else ""
    table.caption = "ops: " + ", ".join(f"{op} {n}" for op, n in shown) + more
    if report.notes:
        table.caption += "\n" + "\n".join(report.notes)
    table.caption_justify = "left"
    return table


def departure_table(path: Path, departure: Departure) -> Table:
    table = Table(title=f"{path.name}: each block against PyTorch (one sample photo)", title_justify="left")
    for column in ("block", "output shape", "max relative diff", ""):
        table.add_column(column)
    first = departure.first
    for row in departure.blocks:
        verdict = ("no tensor of this size in the file" if row.max_abs_rel is None else
                   "FIRST DEPARTING BLOCK" if row is first else
                   "within" if row.max_abs_rel <= departure.tolerance else "departs")
        shown = "-" if row.max_abs_rel is None else f"{row.max_abs_rel:.2e}"
        table.add_row(row.block, "x".join(map(str, row.shape)), shown, verdict)
    table.caption, table.caption_justify = departure.line(), "left"
    return table


def _compare(args: argparse.Namespace, chosen: list[tuple[Path, ExportFormat]]) -> int:
    if args.tolerance is not None and not args.tolerance > 0:
        raise FatDeployError(f"--tolerance must be > 0, got {args.tolerance}")
    if args.checkpoint is not None:
        check_model_input(args.checkpoint)
    with quiet(args.verbose):
        results = [(path, compare_file(path, fmt, args.checkpoint, args.tolerance)) for path, fmt in chosen]
    if args.json:
        json.dump([{"file": str(path), **departure.as_dict()} for path, departure in results], terminal().out, indent=2)
        terminal().out.write("\n")
    else:
        console = Console(file=terminal().out)
        console = console if console.is_terminal else Console(file=terminal().out, width=160)
        for path, departure in results:
            console.print(departure_table(path, departure))
    return 1 if any(departure.first is not None for _, departure in results) else 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.ops < 0:
        raise FatDeployError(f"--ops must be >= 0, got {args.ops}")
    if not args.compare and (args.checkpoint is not None or args.tolerance is not None):
        raise FatDeployError("--checkpoint and --tolerance go with --compare")
    paths = [Path(p) for p in args.paths]
    chosen = [(path, format_of(path, args.format)) for path in paths]  # every name checked before any work
    if args.compare:
        return _compare(args, chosen)
    with quiet(args.verbose):
        reports = [(path, read_coverage(path, fmt)) for path, fmt in chosen]
    if args.json:
        json.dump([{"file": str(path), **report.as_dict()} for path, report in reports], terminal().out, indent=2)
        terminal().out.write("\n")
        return 0
    console = Console(file=terminal().out)
    console = console if console.is_terminal else Console(file=terminal().out, width=160)
    for path, report in reports:
        console.print(report_table(path, report, args.ops))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
