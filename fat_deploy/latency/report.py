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
from fat_deploy.registry import backends

COLUMNS = ("model", "backend", "device", "precision", "batch", "input", "threads", "median ms", "p90 ms",
           "min ms", "std ms", "img/s", "load ms", "cold ms", "load MB", "run MB", "host", "status")
# load ms / load MB: loading the file in a fresh process (time, resident memory over the process's baseline after
# importing the runtime); cold ms: process start to first result there; run MB: the largest resident memory over the
# baseline during the first and the steady runs. "-" where no file is loaded (torch) or the record predates them.
STATUSES = ("ok", "unavailable", "error")
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
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise FatDeployError(f"{path}: not a fat-latency results file (not UTF-8 text: byte {error.start} "
                                 f"is {error.object[error.start]:#04x})") from None
        except OSError as error:
            raise FatDeployError(f"cannot read results file {path}: {error.strerror or error}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise FatDeployError(f"{path}:{number}: not a JSON line") from None
            missing = [k for k in REQUIRED_FIELDS if k not in record] if isinstance(record, dict) else ["all"]
            if missing:
                raise FatDeployError(f"{path}:{number}: not a fat-latency record (missing {', '.join(missing)})")
            if problem := record_problem(record):
                raise FatDeployError(f"{path}:{number}: not a valid fat-latency record: {problem}")
            records.append(record)
    if not records:
        raise FatDeployError(f"no fat-latency records in {', '.join(map(str, paths))}")
    return records


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def record_problem(record: dict[str, Any]) -> str | None:
    """The first field whose type or value a table cannot use, or None."""
    for key in ("model", "backend", "device", "precision", "status", "timed", "created"):
        if not isinstance(record[key], str):
            return f"{key} must be a string, got {record[key]!r}"
    if record["status"] not in STATUSES:
        return f"status must be one of {', '.join(STATUSES)}, got {record['status']!r}"
    for key in ("batch", "threads"):
        if not _is_count(record[key]):
            return f"{key} must be a positive integer, got {record[key]!r}"
    size = record["img_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_count(v) for v in size)):
        return f"img_size must be [height, width] in pixels, got {size!r}"
    if not isinstance(record["environment"], dict):
        return f"environment must be an object, got {type(record['environment']).__name__}"
    stats = record["stats"]
    if record["status"] == "ok" and not isinstance(stats, dict):
        return f"stats must be an object on an ok record, got {stats!r}"
    if stats is not None and not isinstance(stats, dict):
        return f"stats must be an object or null, got {stats!r}"
    for key, value in (stats or {}).items():
        if not _is_number(value):
            return f"stats.{key} must be a number, got {value!r}"
    if record["status"] == "ok" and "median_ms" not in (stats or {}):
        return "stats.median_ms is missing"
    for key in ("init_ms", "first_run_ms", "peak_rss_mb", "peak_device_mb"):
        if record.get(key) is not None and not _is_number(record[key]):
            return f"{key} must be a number or null, got {record[key]!r}"
    fresh = record.get("fresh_process")
    if fresh is not None and not isinstance(fresh, dict):
        return f"fresh_process must be an object or null, got {fresh!r}"
    for key, value in (fresh or {}).items():
        if key not in ("runtime", "version") and value is not None and not _is_number(value):
            return f"fresh_process.{key} must be a number or null, got {value!r}"
    return None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rows(records: Iterable[dict[str, Any]]) -> list[list[str]]:
    """One table row per record; unavailable/error rows carry their reason instead of numbers."""
    table = []
    for r in records:
        s = r.get("stats") or {}
        env = r.get("environment") or {}
        fresh = r.get("fresh_process") or {}
        peaks = [fresh.get(key) for key in ("first_run_peak_delta_mb", "steady_peak_delta_mb")]
        run_peak = max((p for p in peaks if p is not None), default=None)
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason')}"
        table.append([
            r["model"], r["backend"], r["device"], r["precision"], str(r["batch"]),
            "x".join(map(str, r["img_size"])), str(r["threads"]),
            _fmt(s.get("median_ms")), _fmt(s.get("p90_ms")), _fmt(s.get("min_ms")), _fmt(s.get("std_ms")),
            _fmt(s.get("images_per_s"), 1), _fmt(fresh.get("load_ms"), 1),
            _fmt(fresh.get("start_to_first_result_ms"), 0), _fmt(fresh.get("load_delta_mb"), 1), _fmt(run_peak, 1),
            f"{env.get('cpu', '?')} ({env.get('cores', '?')} cores)", status,
        ])
    return table


def environment_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per distinct environment: host, OS, Python and runtime versions."""
    seen: dict[str, None] = {}
    for r in records:
        env = r.get("environment") or {}
        runtimes = tuple(backend.package for backend in backends().values())
        keys = ("cpu", "cpu_id", "cpu_isa", "cores", "os", "python", *dict.fromkeys(runtimes), "gpu", "gpu_driver",
                "cuda")
        env = {**env, "cpu_id": _cpu_id(env), "cpu_isa": " ".join(env.get("cpu_isa") or []) or None}
        seen["; ".join(f"{k} {env[k]}" for k in keys if env.get(k) is not None)] = None
    return list(seen)


def _cpu_id(env: dict[str, Any]) -> str | None:
    """``AuthenticAMD family 25 model 17 stepping 1``, from the record's CPU identity (None in old records)."""
    parts = [(label, env.get(key)) for label, key in (("", "cpu_vendor"), ("family", "cpu_family"),
                                                      ("model", "cpu_model_number"), ("stepping", "cpu_stepping"))]
    text = " ".join(f"{label} {value}".strip() for label, value in parts if value is not None)
    return text or None


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
