"""Quantization judged on a trained FAT-B0: held-out accuracy, speed and size of every mode, one run.

    .venv/bin/python benchmarks/quantization.py [--runs 50] [--speed-size 224] [--modes onnx:int8-static ...]

The model is the test bed (``python -m fat_deploy.testbed``: FAT-B0 trained to tell which of 17 shipped photos a
64 px patch comes from, 544 held-out labeled patches, float top-1 about 81%; built from the weights in the repository's
``testbed/`` on first use, then cached). Every mode is exported by ``fat-export`` at the test bed's 64 px with
``--eval-dir`` on the held-out images and ``--calibration`` on training patches, so each row's top-1 is measured by
the runtime running the artifact (Core ML: its PyTorch simulation, prediction needs macOS). Speed is a phone's
question at a phone's size: the same checkpoint and recipe are exported again at ``--speed-size`` (default 224 px,
the paper's) and every artifact of a runtime and its fp32 artifact are timed alternately in one loop (1 thread,
batch 1), ratios against that fp32; the x86 ISA the int8 kernels use is printed (VNNI or not changes int8 speed-ups
most). Targets (issue 26): per runtime, an int8 mode with a top-1 drop <= 1 point, >= 1.5x the fp32 speed on an
AVX-512 VNNI host (>= 1.3x on AVX2) and <= 0.35x its size.
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
from fat_deploy.environment import host_info, int8_isa
from fat_deploy.exporters import export
from fat_deploy.precision import CALIBRATED
from fat_deploy.registry import backend_for_format
from fat_deploy.testbed import IMG_SIZE, build

MODES = ["onnx:fp32", "onnx:int8-dynamic", "onnx:int8-static",
         "tflite:fp32", "tflite:int8-dynamic", "tflite:int8-weights", "tflite:int8-static",
         "executorch:fp32", "executorch:int8-dynamic", "executorch:int8-static",
         "openvino:fp32", "openvino:int8-static",
         "coreml:fp16", "coreml:int8-weights", "coreml:w8a8"]
TIMED = ("onnx", "tflite", "executorch", "openvino")  # Core ML prediction needs macOS
DROP, SIZE = 1.0, 0.35
SPEED = {"AVX-512 VNNI": 1.5, "AVX-VNNI": 1.5}  # else (AVX2 without VNNI) 1.3
WORTHWHILE = 1.2  # a quantized file under this speed-up is flagged


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--speed-size", type=int, default=224, help="image size the timed exports are made at")
    parser.add_argument("--modes", nargs="+", default=MODES, metavar="FORMAT:MODE")
    args = parser.parse_args()
    bed = build()
    modes = [tuple(mode.split(":")) for mode in args.modes]
    size = (args.speed_size, args.speed_size)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for fmt, precision in modes:
            calibration = bed.calibration_dir if precision in CALIBRATED else None
            artifact = export("fat_b0", fmt, precision, Path(folder), checkpoint=bed.checkpoint, labels=bed.labels,
                              img_size=IMG_SIZE, eval_dir=bed.eval_dir, force=True, calibration=calibration)
            rows[(fmt, precision)] = {"artifact": artifact, "size": size_of(artifact.path) if artifact.path else None}
            if fmt in TIMED and artifact.path is not None:  # the same recipe at the timed size, for its speed
                kept = (artifact.cost.get("accuracy_search") or {}).get("kept_float")
                timed = export("fat_b0", fmt, precision, Path(folder) / "timed", checkpoint=bed.checkpoint,
                               labels=bed.labels, img_size=size, force=True, calibration=calibration,
                               verify=False, **({"keep_float": kept} if kept else {}))
                rows[(fmt, precision)]["timed"] = timed.path
        inputs = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
        for fmt in TIMED:
            backend = backend_for_format(fmt)
            pairs = {}
            for (row_fmt, precision), row in rows.items():
                if row_fmt == fmt and row.get("timed") is not None:
                    runner = backend.load(LoadRequest(model_name="fat_b0", model=None, artifact=row["timed"],
                                                      batch=1, img_size=size, threads=1))
                    pairs[precision] = (runner, runner.prepare(inputs))
            for precision, samples in time_interleaved(pairs, warmup=5, runs=args.runs).items():
                rows[(fmt, precision)]["ms"] = statistics.median(samples)

    isa = int8_isa()
    speed_target = SPEED.get(isa, 1.3)
    print(f"host: {host_info()}; int8 ISA: {isa}; torch {torch.__version__}; FAT-B0 test bed ({bed.record['task']}; "
          f"{bed.record['held_out_images']} held-out images): accuracy at {IMG_SIZE} px; speed at {args.speed_size} px, "
          f"batch 1, 1 thread, {args.runs} interleaved runs; MB of the {IMG_SIZE} px files")
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
        if precision.startswith("int8") and speed is not None and speed < WORTHWHILE:
            print(f"{'':10s} ^ flagged: {speed:.2f}x its fp32 speed, under {WORTHWHILE}x")
        if precision.startswith("int8") and None not in (drop, speed, size_ratio):
            if drop <= DROP and speed >= speed_target and size_ratio <= SIZE:
                met.setdefault(fmt, []).append(precision)
    float_top1 = next((r["artifact"].comparison or {}).get("reference_top1") for r in rows.values())
    print(f"float top-1 (PyTorch, faithful model): {float_top1}%")
    for fmt in TIMED:
        if not any(name == fmt and precision.startswith("int8") for name, precision in rows):
            print(f"target {fmt}: not measured in this run (no int8 mode of it among --modes)")
            continue
        verdict = f"met by {', '.join(met[fmt])}" if fmt in met else "MISSED"
        print(f"target {fmt}: an int8 mode with drop <= {DROP} point, >= {speed_target}x fp32 speed ({isa}), "
              f"<= {SIZE}x size: {verdict}")


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}s}"


if __name__ == "__main__":
    main()
