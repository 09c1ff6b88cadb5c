"""Per-op profiles from the runtimes' own profilers, summarised by op type and by op (``fat-latency --profile``)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from fat_deploy.contract.session import OpTime, ProfileUnavailable, Runner

TOP_OPS = 15


def profile_ops(runner: Runner, prepared: Any, runs: int, source: str, trace: Path | None = None) -> dict[str, Any]:
    """Profile ``runs`` invocations; where the runtime has no profiler, say so instead of a number. With ``trace``,
    the runtime's Chrome/Perfetto trace goes there where its profiler writes one (the record says which)."""
    try:
        times = runner.op_times(prepared, runs, trace)
    except ProfileUnavailable as reason:
        return {"unavailable": str(reason)}
    summary = summarize_ops(times, runs, source)
    if trace is not None:
        summary["trace"] = (str(trace) if trace.is_file() else
                            f"not written: {source} gives per-op times but no Chrome/Perfetto trace")
    return summary


def summarize_ops(times: list[OpTime], runs: int, source: str) -> dict[str, Any]:
    """ms per run and share of the profiled total, by op type (with op counts) and for the slowest ops."""
    total_us = sum(t.microseconds for t in times) or 1.0
    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_op: dict[tuple[str, str], float] = defaultdict(float)
    for t in times:
        by_type[t.op_type][0] += t.microseconds
        by_type[t.op_type][1] += t.count
        by_op[(t.name, t.op_type)] += t.microseconds
    return {
        "source": source,
        "runs": runs,
        "total_ms_per_run": round(total_us / runs / 1e3, 4),
        "by_op_type": [
            {"op_type": op_type, "ms_per_run": round(us / runs / 1e3, 4), "share": round(us / total_us, 4),
             "count_per_run": round(count / runs, 2)}
            for op_type, (us, count) in sorted(by_type.items(), key=lambda item: -item[1][0])
        ],
        "top_ops": [
            {"name": name, "op_type": op_type, "ms_per_run": round(us / runs / 1e3, 4), "share": round(us / total_us, 4)}
            for (name, op_type), us in sorted(by_op.items(), key=lambda item: -item[1])[:TOP_OPS]
        ],
    }
