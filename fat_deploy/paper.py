"""The paper's numbers (NeurIPS 2023, FAT), shipped as package data and always labelled as the paper's."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class PaperNumbers:
    """One row of the paper's tables. ``None`` where the paper gives no value."""

    model: str
    input_size: int
    params_m: float
    flops_g: float
    top1: float
    cpu_ms: float | None = None
    gpu_ms: float | None = None
    throughput_img_s: float | None = None


def _opt(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


@cache
def paper_rows() -> dict[str, PaperNumbers]:
    """All paper rows keyed by the paper's model label (e.g. ``"FAT-B0"``)."""
    rows: dict[str, PaperNumbers] = {}
    data = resources.files("fat_deploy") / "data"
    for filename in ("paper_fat_variants.csv", "paper_efficiency_table.csv"):
        text = (data / filename).read_text(encoding="utf-8")
        for row in csv.DictReader(io.StringIO(text, newline="")):
            previous = rows.get(row["model"])
            rows[row["model"]] = PaperNumbers(
                model=row["model"],
                input_size=int(row["input"]),
                params_m=float(row["params_m"]),
                flops_g=float(row["flops_g"]),
                top1=float(row["top1"]),
                cpu_ms=_opt(row.get("cpu_ms")) or (previous.cpu_ms if previous else None),
                gpu_ms=_opt(row.get("gpu_ms")) or (previous.gpu_ms if previous else None),
                throughput_img_s=_opt(row.get("throughput_img_s"))
                or (previous.throughput_img_s if previous else None),
            )
    return rows


@cache
def efficiency_table_order() -> tuple[str, ...]:
    """The paper's efficiency-table rows, in the paper's order."""
    data = resources.files("fat_deploy") / "data" / "paper_efficiency_table.csv"
    text = data.read_text(encoding="utf-8")
    return tuple(row["model"] for row in csv.DictReader(io.StringIO(text, newline="")))
