"""Quantization judged on a trained FAT-B0: held-out accuracy, speed and size of every mode, one run.

    .venv/bin/python benchmarks/quantization.py [--runs 50] [--img-size 64] [--modes onnx:int8-static ...]

The model is the test bed (``python -m fat_deploy.testbed``: FAT-B0 trained on scikit-learn's handwritten
digits, 500 held-out labeled images; trained on first use, then cached). Every mode is exported by
``fat-export`` with ``--eval-dir`` on the held-out images and ``--calibration`` on training images, so each row's
top-1 is measured by the runtime running the artifact (Core ML: its PyTorch simulation, prediction needs macOS).
Speed: every artifact of a runtime and its fp32 artifact are timed alternately in one loop (1 thread, batch 1),
ratios against that fp32. Targets (issue 12): per runtime, at least one int8 mode with a top-1 drop <= 1 point,
>= 1.5x the fp32 speed and <= 0.3x its size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from fat_deploy.contract.session import LoadRequest
from fat_deploy.contract.timing import time_interleaved
from fat_deploy.environment import host_info
from fat_deploy.exporters import export
from fat_deploy.precision import CALIBRATED
from fat_deploy.registry import backend_for_format
from fat_deploy.testbed import IMG_SIZE, build

MODES = ["onnx:fp32", "onnx:int8-dynamic", "onnx:int8-static",
         "tflite:fp32", "tflite:int8-dynamic", "tflite:int8-weights", "tflite:int8-static",
         "executorch:fp32", "executorch:int8-dynamic", "executorch:int8-static",
         "coreml:fp16", "coreml:int8-weights", "coreml:w8a8"]
TIMED = ("onnx", "tflite", "executorch")  # Core ML prediction needs macOS
DROP, SPEED, SIZE = 1.0, 1.5, 0.3


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--img-size", type=int, default=IMG_SIZE)  # the test bed's
    parser.add_argument("--modes", nargs="+", default=MODES, metavar="FORMAT:MODE")
    args = parser.parse_args()
    bed = build()
    modes = [tuple(mode.split(":")) for mode in args.modes]
    size = (args.img_size, args.img_size)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for fmt, precision in modes:
            artifact = export("fat_b0", fmt, precision, Path(folder), checkpoint=bed.checkpoint, labels=bed.labels,
                              img_size=size, eval_dir=bed.eval_dir, force=True,
                              calibration=bed.calibration_dir if precision in CALIBRATED else None)
            rows[(fmt, precision)] = {"artifact": artifact, "size": size_of(artifact.path) if artifact.path else None}
        inputs = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
        for fmt in TIMED:
            backend = backend_for_format(fmt)
            pairs = {}
            for (row_fmt, precision), row in rows.items():
                if row_fmt == fmt and row["artifact"].path is not None:
                    runner = backend.load(LoadRequest(model_name="fat_b0", model=None, artifact=row["artifact"].path,
                                                      batch=1, img_size=size, threads=1))
                    pairs[precision] = (runner, runner.prepare(inputs))
            for precision, samples in time_interleaved(pairs, warmup=5, runs=args.runs).items():
                rows[(fmt, precision)]["ms"] = statistics.median(samples)

    print(f"host: {host_info()}; torch {torch.__version__}; FAT-B0 test bed ({bed.record['task']}; "
          f"{bed.record['held_out_images']} held-out images), {args.img_size} px, batch 1, 1 thread, {args.runs} "
          "interleaved runs")
    print(f"{'format':10s} {'mode':13s} {'status':22s} {'top-1 %':>8s} {'drop':>6s} {'MB':>6s} {'x fp32 size':>11s} "
          f"{'ms':>7s} {'x fp32 speed':>12s}  measured with")
    met: dict[str, list[str]] = {}
    for (fmt, precision), row in rows.items():
        artifact = row["artifact"]
        base = rows.get((fmt, "fp32")) or rows.get((fmt, "fp16"))
        accuracy = (artifact.comparison or {})
        top1, drop = accuracy.get("top1"), accuracy.get("top1_drop_points")
        size_ratio = row["size"] / base["size"] if row["size"] and base and base["size"] else None
        speed = base["ms"] / row["ms"] if "ms" in row and base and "ms" in base else None
        print(f"{fmt:10s} {precision:13s} {artifact.status:22s} {_num(top1, 8, 2)} {_num(drop, 6, 2)} "
              f"{_num(row['size'] and row['size'] / 1e6, 6, 2)} {_num(size_ratio, 11, 2)} {_num(row.get('ms'), 7, 2)} "
              f"{_num(speed, 12, 2)}  {accuracy.get('source', '-')}{'' if artifact.path else ': ' + str(artifact.error)}")
        if precision.startswith("int8") and None not in (drop, speed, size_ratio):
            if drop <= DROP and speed >= SPEED and size_ratio <= SIZE:
                met.setdefault(fmt, []).append(precision)
    float_top1 = next((r["artifact"].comparison or {}).get("reference_top1") for r in rows.values())
    print(f"float top-1 (PyTorch, faithful model): {float_top1}%")
    for fmt in TIMED:
        verdict = f"met by {', '.join(met[fmt])}" if fmt in met else "MISSED"
        print(f"target {fmt}: an int8 mode with drop <= {DROP} point, >= {SPEED}x fp32 speed, <= {SIZE}x size: {verdict}")


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}s}"


if __name__ == "__main__":
    main()
