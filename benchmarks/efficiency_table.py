"""Regenerate the paper's full efficiency table on this machine, end to end, and say how long it took.

    .venv/bin/python benchmarks/efficiency_table.py [--backend onnxruntime tflite torch] [--out docs]

Exports every row's model to each runtime (verified; cached in a fresh folder so the export time is part of
the measurement), times it at its paper input size (1 thread, batch 1), and writes efficiency_table.{md,csv,
jsonl,png,svg} to --out. Prints the table, the ordering check against the paper (which models are faster than
FAT-B0, ours vs the paper's) and the wall time of the whole run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fat_deploy.cli.latency import main as fat_latency


def ordering_report(jsonl: Path, backend: str) -> list[str]:
    """Per model: faster or slower than FAT-B0, here vs in the paper."""
    from fat_deploy.latency.table import build_rows, profiles_from_records

    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    rows = build_rows(records, profiles_from_records(records), [backend])
    lines, agree = [], 0
    for row in rows:
        ours, paper = row.cpu_vs_b0.get(backend), row.paper_cpu_vs_b0
        if ours is None or paper is None or row.label == "FAT-B0":
            continue
        same = (ours < 1) == (paper < 1)
        agree += same
        lines.append(f"  {row.label:16s} ours {ours:5.2f}x FAT-B0, paper {paper:5.2f}x  "
                     f"{'same side' if same else 'ORDER DIFFERS'}")
    lines.append(f"  {agree}/{len(lines)} peers on the same side of FAT-B0 as in the paper ({backend})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", nargs="+", default=["onnxruntime", "tflite", "torch"])
    parser.add_argument("--out", default="docs")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "efficiency_table.jsonl"
    jsonl.unlink(missing_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        code = fat_latency([
            "--table", "--backend", *args.backend, "--runs", str(args.runs), "--warmup", str(args.warmup),
            "--cache-dir", cache, "--json", str(jsonl), "--markdown", str(out / "efficiency_table.md"),
            "--csv", str(out / "efficiency_table.csv"),
            "--plot", str(out / "efficiency_table.png"), str(out / "efficiency_table.svg"),
        ])
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(code)
    print("ordering vs FAT-B0 (CPU, batch 1):")
    for backend in args.backend:
        print("\n".join(ordering_report(jsonl, backend)))
    print(f"end to end (exports + verification + timing, {len(args.backend)} backend(s)): {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
