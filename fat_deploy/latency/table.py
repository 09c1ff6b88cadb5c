"""The paper's efficiency table, regenerated: our measurements beside the paper's numbers.

Rows follow the paper's order. Measured here: params and MACs (torch's FLOP counter), CPU ms per runtime
(batch 1), GPU ms (torch, batch 1) and throughput (torch on the GPU, large batch, fp16) where a CUDA device
exists. Copied from the paper, and labelled so: Params, FLOPs, CPU, GPU, throughput and top-1 (no ImageNet
here: every top-1 is the paper's). Each latency is also given relative to FAT-B0, ours and the paper's, so a
reader sees whether the paper's ordering holds on this machine.

:func:`build_rows` is pure: it turns measurement records (JSON lines of ``fat-latency``) and profiles into
rows, so tables from several machines can be merged and rebuilt without measuring again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.table import Table

from fat_deploy.errors import FatDeployError
from fat_deploy.latency.charts import pyplot, save_figure
from fat_deploy.models import get_spec, profile
from fat_deploy.models.registry import list_models
from fat_deploy.paper import efficiency_table_order, paper_rows

REFERENCE_MODEL = "FAT-B0"
# The FAT repo's --throughput routine (github.com/qhfan/FAT, ``classification/main.py``): batch 128, AMP, 50 + 30 runs.
THROUGHPUT_BATCH = 128
TOP1_NOTE = "top-1 is the paper's (no ImageNet evaluation here)"


@dataclass(frozen=True)
class ModelProfile:
    """Size and compute we measured for one model at its table input size."""

    params_m: float
    gmacs: float  # conv + linear
    gmacs_total: float  # + attention matmuls


@dataclass
class TableRow:
    """One row of the regenerated table: ours (measured) and the paper's, side by side."""

    label: str
    model: str
    input_size: int
    params_m: float | None
    gmacs: float | None
    gmacs_total: float | None
    cpu_ms: dict[str, float | None] = field(default_factory=dict)  # backend -> median ms (None: see reasons)
    cpu_vs_b0: dict[str, float | None] = field(default_factory=dict)
    gpu_ms: float | None = None
    gpu_vs_b0: float | None = None
    throughput_img_s: float | None = None
    reasons: dict[str, str] = field(default_factory=dict)  # column -> why there is no number
    paper_params_m: float | None = None
    paper_flops_g: float | None = None
    paper_cpu_ms: float | None = None
    paper_gpu_ms: float | None = None
    paper_throughput_img_s: float | None = None
    paper_top1: float | None = None
    paper_cpu_vs_b0: float | None = None
    paper_gpu_vs_b0: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def table_models() -> list[tuple[str, str]]:
    """(paper label, registry name) for every row of the paper's efficiency table, in the paper's order."""

    by_label = {get_spec(name).paper_label: name for name in list_models()}
    missing = [label for label in efficiency_table_order() if label not in by_label]
    if missing:
        raise FatDeployError(f"no registered model for the paper's rows: {', '.join(missing)}")
    return [(label, by_label[label]) for label in efficiency_table_order()]


def _is_cpu_batch1_of(record: dict[str, Any], backend: str) -> bool:
    return bool(record["backend"] == backend and record["device"] == "cpu" and record["batch"] == 1)


def _latest(records: Iterable[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    chosen = None
    for record in records:
        if predicate(record) and (chosen is None or str(record.get("created", "")) >= str(chosen.get("created", ""))):
            chosen = record
    return chosen


def _median(record: dict[str, Any] | None) -> tuple[float | None, str | None]:
    if record is None:
        return None, "not measured"
    if record.get("status") == "ok" and record.get("stats"):
        return float(record["stats"]["median_ms"]), None
    return None, str(record.get("reason") or record.get("status"))


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def build_rows(
    records: Sequence[dict[str, Any]],
    profiles: dict[str, ModelProfile],
    cpu_backends: Sequence[str],
    models: Sequence[tuple[str, str]] | None = None,
) -> list[TableRow]:
    """The table from measurement records: per model, the latest batch-1 CPU record per backend, the latest
    batch-1 CUDA record (GPU ms) and the latest large-batch CUDA record (throughput)."""
    models = list(models) if models is not None else table_models()
    paper = paper_rows()
    rows: list[TableRow] = []
    for label, name in models:
        mine = [r for r in records if r.get("model") == name]
        profile = profiles.get(name)
        numbers = paper.get(label)
        row = TableRow(
            label=label, model=name,
            input_size=numbers.input_size if numbers else 0,
            params_m=profile.params_m if profile else None,
            gmacs=profile.gmacs if profile else None,
            gmacs_total=profile.gmacs_total if profile else None,
        )
        if mine:
            row.input_size = int(mine[0]["img_size"][0])
        for backend in cpu_backends:
            record = _latest(mine, partial(_is_cpu_batch1_of, backend=backend))
            row.cpu_ms[backend], reason = _median(record)
            if reason:
                row.reasons[f"cpu:{backend}"] = reason
        gpu_record = _latest(mine, lambda r: r["device"] == "cuda" and r["batch"] == 1)
        row.gpu_ms, reason = _median(gpu_record)
        if reason:
            row.reasons["gpu"] = reason
        throughput = _latest(mine, lambda r: r["device"] == "cuda" and r["batch"] > 1)
        if throughput is not None and throughput.get("status") == "ok" and throughput.get("stats"):
            row.throughput_img_s = float(throughput["stats"]["images_per_s"])
        else:
            row.reasons["throughput"] = _median(throughput)[1] or "not measured"
        if numbers:
            row.paper_params_m, row.paper_flops_g = numbers.params_m, numbers.flops_g
            row.paper_cpu_ms, row.paper_gpu_ms = numbers.cpu_ms, numbers.gpu_ms
            row.paper_throughput_img_s, row.paper_top1 = numbers.throughput_img_s, numbers.top1
        rows.append(row)
    reference = next((row for row in rows if row.label == REFERENCE_MODEL), None)
    for row in rows:
        for backend in cpu_backends:
            row.cpu_vs_b0[backend] = _ratio(row.cpu_ms[backend], reference.cpu_ms.get(backend) if reference else None)
        row.gpu_vs_b0 = _ratio(row.gpu_ms, reference.gpu_ms if reference else None)
        row.paper_cpu_vs_b0 = _ratio(row.paper_cpu_ms, reference.paper_cpu_ms if reference else None)
        row.paper_gpu_vs_b0 = _ratio(row.paper_gpu_ms, reference.paper_gpu_ms if reference else None)
    return rows


@dataclass(frozen=True)
class Job:
    """One measurement the table needs."""

    model: str
    backend: str
    device: str
    batch: int
    precision: str

    def describe(self) -> str:
        what = "throughput" if self.batch > 1 else "latency"
        return f"{self.model}: {self.backend} {self.device} {what} (batch {self.batch}, {self.precision})"


def plan(models: Sequence[str], cpu_backends: Sequence[str], gpu: bool = True) -> list[Job]:
    """Batch-1 CPU latency per backend, and (torch, CUDA) batch-1 latency and fp16 large-batch throughput."""
    jobs = [Job(model, backend, "cpu", 1, "fp32") for model in models for backend in cpu_backends]
    if gpu:
        jobs += [Job(model, "torch", "cuda", 1, "fp32") for model in models]
        jobs += [Job(model, "torch", "cuda", THROUGHPUT_BATCH, "fp16") for model in models]
    return jobs


def profile_models(models: Iterable[str]) -> dict[str, ModelProfile]:
    """Params and MACs of each model at its table input size (random weights; counts do not depend on them)."""

    profiles = {}
    for name in models:
        spec = get_spec(name)
        with_weights = spec.builder()
        measured = profile(with_weights, spec.input_size)
        profiles[name] = ModelProfile(measured.params_m, measured.gmacs, measured.gmacs_total)
    return profiles


def profiles_from_records(records: Iterable[dict[str, Any]]) -> dict[str, ModelProfile]:
    """Profiles stored with table measurements (``record["profile"]``)."""
    return {r["model"]: ModelProfile(**r["profile"]) for r in records if isinstance(r.get("profile"), dict)}


# ---------------------------------------------------------------- presentation


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _times(value: float | None) -> str:
    return "" if value is None else f" ({value:.2f}x)"


def _columns(cpu_backends: Sequence[str]) -> list[str]:
    return [
        "model", "input", "params M", "GMACs", "GMACs +attn",
        *[f"CPU ms {backend} (x B0)" for backend in cpu_backends],
        "GPU ms (x B0)", "img/s",
        "paper params M", "paper FLOPs G", "paper CPU ms (x B0)", "paper GPU ms (x B0)", "paper img/s",
        "paper top-1",
    ]


def _cells(row: TableRow, cpu_backends: Sequence[str], short_reasons: bool) -> list[str]:
    def missing(column: str) -> str:
        reason = row.reasons.get(column, "-")
        return "n/a" if short_reasons and reason != "-" else reason

    cpu = [
        f"{row.cpu_ms[b]:.1f}{_times(row.cpu_vs_b0.get(b))}" if row.cpu_ms.get(b) is not None else missing(f"cpu:{b}")
        for b in cpu_backends
    ]
    gpu = f"{row.gpu_ms:.1f}{_times(row.gpu_vs_b0)}" if row.gpu_ms is not None else missing("gpu")
    throughput = f"{row.throughput_img_s:.0f}" if row.throughput_img_s is not None else missing("throughput")
    return [
        row.label, str(row.input_size), _num(row.params_m, 2), _num(row.gmacs, 2), _num(row.gmacs_total, 2),
        *cpu, gpu, throughput,
        _num(row.paper_params_m), _num(row.paper_flops_g),
        f"{_num(row.paper_cpu_ms)}{_times(row.paper_cpu_vs_b0)}", f"{_num(row.paper_gpu_ms)}{_times(row.paper_gpu_vs_b0)}",
        _num(row.paper_throughput_img_s, 0), _num(row.paper_top1),
    ]


def footnotes(rows: Sequence[TableRow]) -> list[str]:
    """Why columns are empty, once per distinct reason, plus what the paper's columns are."""
    reasons: dict[str, set[str]] = {}
    for row in rows:
        for column, reason in row.reasons.items():
            reasons.setdefault(reason, set()).add(column.replace("cpu:", "CPU ").replace("gpu", "GPU"))
    notes = [f"n/a ({', '.join(sorted(columns))}): {reason}" for reason, columns in reasons.items()]
    return notes + [
        "ours: measured here, random weights (latency does not depend on them); GMACs = conv+linear, "
        "+attn adds attention matmuls",
        f"paper: copied from the FAT paper (NeurIPS 2023), not measured here; {TOP1_NOTE}",
    ]


def rich_efficiency_table(rows: Sequence[TableRow], cpu_backends: Sequence[str], title: str) -> Table:
    table = Table(title=title)
    for column in _columns(cpu_backends):
        style = "dim" if column.startswith("paper") else None
        table.add_column(column, justify="left" if column == "model" else "right", style=style)
    for row in rows:
        table.add_row(*_cells(row, cpu_backends, short_reasons=True), style="bold" if row.label.startswith("FAT") else None)
    return table


def markdown_table(rows: Sequence[TableRow], cpu_backends: Sequence[str], environment: Sequence[str] = ()) -> str:
    columns = _columns(cpu_backends)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    for row in rows:
        cells = _cells(row, cpu_backends, short_reasons=True)
        if row.label.startswith("FAT"):
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    notes = [*(f"environment: {line}" for line in environment), *footnotes(rows)]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def csv_table(rows: Sequence[TableRow], cpu_backends: Sequence[str]) -> str:
    """Plain numbers, one column per quantity (ratios and reasons in their own columns)."""
    header = ["model", "registry_name", "input", "params_m", "gmacs", "gmacs_total"]
    for backend in cpu_backends:
        header += [f"cpu_ms_{backend}", f"cpu_vs_fat_b0_{backend}"]
    header += ["gpu_ms", "gpu_vs_fat_b0", "throughput_img_s", "paper_params_m", "paper_flops_g", "paper_cpu_ms",
               "paper_cpu_vs_fat_b0", "paper_gpu_ms", "paper_gpu_vs_fat_b0", "paper_throughput_img_s", "paper_top1",
               "missing_because"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)

    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.4g}"

    for row in rows:
        line: list[str] = [row.label, row.model, str(row.input_size), fmt(row.params_m), fmt(row.gmacs),
                           fmt(row.gmacs_total)]
        for backend in cpu_backends:
            line += [fmt(row.cpu_ms.get(backend)), fmt(row.cpu_vs_b0.get(backend))]
        line += [fmt(row.gpu_ms), fmt(row.gpu_vs_b0), fmt(row.throughput_img_s), fmt(row.paper_params_m),
                 fmt(row.paper_flops_g), fmt(row.paper_cpu_ms), fmt(row.paper_cpu_vs_b0), fmt(row.paper_gpu_ms),
                 fmt(row.paper_gpu_vs_b0), fmt(row.paper_throughput_img_s), fmt(row.paper_top1),
                 "; ".join(f"{k}: {v}" for k, v in row.reasons.items())]
        writer.writerow(line)
    return out.getvalue()


def plot(rows: Sequence[TableRow], backend: str, paths: Sequence[str | Path], environment: str = "") -> None:
    """Latency vs top-1, one marker per model: ours filled, the paper's hollow; FAT highlighted."""
    fig, ax = pyplot().subplots(figsize=(8, 5.5), dpi=120)
    for row in rows:
        if row.paper_top1 is None:
            continue
        is_fat = row.label.startswith("FAT")
        color = "tab:red" if is_fat else "tab:blue"
        marker = "*" if is_fat else "o"
        size = 160 if is_fat else 60
        ours = row.cpu_ms.get(backend)
        if ours is not None:
            ax.scatter(ours, row.paper_top1, marker=marker, s=size, color=color, zorder=3)
            ax.annotate(row.label, (ours, row.paper_top1), textcoords="offset points", xytext=(6, 4), fontsize=8,
                        fontweight="bold" if is_fat else "normal")
        if row.paper_cpu_ms is not None:
            ax.scatter(row.paper_cpu_ms, row.paper_top1, marker=marker, s=size, facecolors="none",
                       edgecolors=color, zorder=2)
            if ours is not None:
                ax.plot([ours, row.paper_cpu_ms], [row.paper_top1] * 2, color=color, alpha=0.25, lw=1)
    fat = [r for r in rows if r.label.startswith("FAT") and r.cpu_ms.get(backend) is not None]
    if len(fat) > 1:
        points = [(float(r.cpu_ms[backend] or 0.0), float(r.paper_top1 or 0.0)) for r in fat]  # both set: filtered
        ax.plot([x for x, _ in points], [y for _, y in points], color="tab:red", lw=1.5, zorder=1)
    ax.scatter([], [], marker="o", color="gray", label=f"measured here ({backend}, CPU ms, batch 1)")
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="gray", label="paper's CPU ms")
    ax.set_xlabel("CPU latency (ms per image)")
    ax.set_ylabel("ImageNet top-1 (%), the paper's")
    ax.set_title("FAT vs peers: latency vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, paths, environment)
