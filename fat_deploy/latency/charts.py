"""Pictures of measurements: where time goes per runtime (``--profile-chart``), and latency against memory and
file size (``--cost-plot``). matplotlib (the ``plot`` extra), drawn off-screen to PNG, SVG or PDF."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

TYPES_SHOWN = 8  # op types drawn by name; the rest are summed as "other"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, paths: Sequence[str | Path], environment: str = "") -> None:
    """The environment as a grey footer, then every path written and the figure closed."""
    if environment:
        fig.text(0.01, 0.005, environment, fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    for path in paths:
        fig.savefig(path)
    pyplot().close(fig)


def _label(record: dict[str, Any]) -> str:
    return f"{record['model']} on {record['backend']} ({record['precision']})"


def op_profile_chart(records: Sequence[dict[str, Any]], paths: Sequence[str | Path], environment: str = "") -> int:
    """One stacked bar per profiled record: ms per run by op type (the types that take the most time across all
    records by name, the rest as "other"). Returns how many records had a profile to draw."""
    profiled = [r for r in records if r.get("op_profile") and "by_op_type" in r["op_profile"]]
    totals: dict[str, float] = {}
    for record in profiled:
        for row in record["op_profile"]["by_op_type"]:
            totals[row["op_type"]] = totals.get(row["op_type"], 0.0) + row["ms_per_run"]
    named = sorted(totals, key=lambda t: -totals[t])[:TYPES_SHOWN]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 1.8 + 0.6 * max(1, len(profiled))), dpi=120)
    colors = plt.get_cmap("tab10")
    for position, record in enumerate(profiled):
        by_type = {row["op_type"]: row["ms_per_run"] for row in record["op_profile"]["by_op_type"]}
        left = 0.0
        for index, op_type in enumerate([*named, "other"]):
            width = (by_type.get(op_type, 0.0) if op_type != "other"
                     else sum(ms for t, ms in by_type.items() if t not in named))
            ax.barh(position, width, left=left, color=colors(index % 10) if op_type != "other" else "lightgray",
                    label=op_type if position == 0 else None)
            left += width
        ax.text(left, position, f" {left:.1f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(profiled)), [_label(r) for r in profiled], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per run, by op type (the runtime's own profiler, after timing)")
    ax.set_title("where the time goes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="op type", title_fontsize=7)
    save_figure(fig, paths, environment)
    return len(profiled)


def cost_plot(records: Sequence[dict[str, Any]], paths: Sequence[str | Path], environment: str = "") -> int:
    """Warm median ms against the model-load memory of a fresh process, one marker per record, its area the file
    size. Returns how many records had both numbers."""
    points = [r for r in records if r.get("stats") and (r.get("fresh_process") or {}).get("load_delta_mb") is not None]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for record in points:
        size_mb = (record.get("artifact_size_bytes") or 0) / 2**20
        ax.scatter(record["stats"]["median_ms"], record["fresh_process"]["load_delta_mb"], s=20 + 6 * size_mb,
                   alpha=0.6, color="tab:red" if record["model"].startswith("fat") else "tab:blue")
        ax.annotate(f"{record['model']} / {record['backend']} ({size_mb:.0f} MB)",
                    (record["stats"]["median_ms"], record["fresh_process"]["load_delta_mb"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xlabel("warm median latency (ms per image)")
    ax.set_ylabel("memory to load the file (MB over a fresh process's baseline)")
    ax.set_title("latency, memory and file size (marker area: file size)")
    ax.grid(alpha=0.3)
    save_figure(fig, paths, environment)
    return len(points)
