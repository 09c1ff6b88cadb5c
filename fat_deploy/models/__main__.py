"""``python -m fat_deploy.models``: every registered model, measured params/MACs beside the paper's."""

from __future__ import annotations

import sys

import torch
from rich.console import Console
from rich.table import Table

from fat_deploy.models import get_spec, list_models, profile


def main() -> int:
    table = Table(title="Registered models: measured here (random init) vs the paper's numbers")
    for column in ("model", "input", "params M", "GMACs conv+linear", "GMACs +attn",
                   "paper params M", "paper FLOPs G", "Δ params", "Δ MACs", "paper top-1", "configuration"):
        table.add_column(column, justify="left" if column in ("model", "configuration") else "right")
    for name in list_models():
        spec = get_spec(name)
        measured = profile(spec.builder(), spec.input_size)
        paper = spec.paper
        table.add_row(
            name,
            str(spec.input_size),
            f"{measured.params_m:.2f}",
            f"{measured.gmacs:.3f}",
            f"{measured.gmacs_total:.3f}",
            f"{paper.params_m:g}" if paper else "-",
            f"{paper.flops_g:g}" if paper else "-",
            f"{measured.params_m / paper.params_m - 1:+.1%}" if paper else "-",
            f"{measured.gmacs / paper.flops_g - 1:+.1%}" if paper else "-",
            f"{paper.top1:g}" if paper else "-",
            "official" if spec.official else "derived from the paper's table, not official",
        )
    console = Console()
    if not console.is_terminal:  # pipes and CI logs: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)
    print(f"torch {torch.__version__}; the paper's columns are copied from the paper, not measured; "
          "Δ compares our conv+linear count with the paper's rounded numbers.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
