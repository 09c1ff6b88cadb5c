"""Measurement records as JSON lines, and the same records as a terminal, Markdown or CSV table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.table import Table

from fat_deploy.errors import FatDeployError

COLUMNS = ("model", "backend", "device", "precision", "batch", "input", "threads", "median ms", "p90 ms",
           "min ms", "std ms", "img/s", "init ms", "first ms", "peak RSS MB", "host", "status")
REQUIRED_FIELDS = ("model", "backend", "device", "precision", "batch", "img_size", "threads", "status",
                   "stats", "environment", "timed", "created")


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append one JSON object per line (results from several runs accumulate)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from one or more JSON-lines files, checked for the fields a table needs."""
    records = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FatDeployError(f"results file not found: {path}")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise FatDeployError(f"{path}:{number}: not a JSON line") from None
            missing = [k for k in REQUIRED_FIELDS if k not in record] if isinstance(record, dict) else ["all"]
            if missing:
                raise FatDeployError(f"{path}:{number}: not a fat-latency record (missing {', '.join(missing)})")
            records.append(record)
    return records


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rows(records: Iterable[dict[str, Any]]) -> list[list[str]]:
    """One table row per record; unavailable/error rows carry their reason instead of numbers."""
    table = []
    for r in records:
        s = r.get("stats") or {}
        env = r.get("environment") or {}
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason')}"
        table.append([
            r["model"], r["backend"], r["device"], r["precision"], str(r["batch"]),
            "x".join(map(str, r["img_size"])), str(r["threads"]),
            _fmt(s.get("median_ms")), _fmt(s.get("p90_ms")), _fmt(s.get("min_ms")), _fmt(s.get("std_ms")),
            _fmt(s.get("images_per_s"), 1), _fmt(r.get("init_ms"), 1), _fmt(r.get("first_run_ms"), 1),
            _fmt(r.get("peak_rss_mb"), 0), f"{env.get('cpu', '?')} ({env.get('cores', '?')} cores)", status,
        ])
    return table


def environment_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per distinct environment: host, OS, Python and runtime versions."""
    seen: dict[str, None] = {}
    for r in records:
        env = r.get("environment") or {}
        keys = ("cpu", "cores", "os", "python", "torch", "onnxruntime", "ai-edge-litert", "coremltools", "gpu",
                "gpu_driver", "cuda")
        seen["; ".join(f"{k} {env[k]}" for k in keys if k in env)] = None
    return list(seen)


def rich_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="right" if column.endswith(("ms", "MB", "img/s")) else "left")
    for row in rows(records):
        table.add_row(*row)
    return table


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(records)]
    lines += ["", *(f"Environment: {line}" for line in environment_lines(records)),
              f"Timed: {records[0]['timed'] if records else ''}."]
    return "\n".join(lines) + "\n"


def csv_text(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(rows(records))
    return buffer.getvalue()
