"""Quantization targets for FAT-B0 (1 thread, batch 1), measured in one run on this machine.

    .venv/bin/python benchmarks/quantization.py [--runs 100]

Weights: random init with BatchNorm statistics recalibrated on the shipped photos (no trained FAT weights can
be downloaded here; pass --checkpoint for real ones). For every mode: held-out cosine / SQNR / top-1 agreement
(from fat-export's verification, or its PyTorch simulation where the runtime cannot run), file size vs the
format's fp32 artifact, and latency vs fp32 on the same runtime. Targets (issue 6): onnxruntime int8-static
>= 1.4x faster with cosine >= 0.99; TFLite int8-dynamic >= 1.5x faster than TFLite fp32; every int8 artifact
<= 0.3x the fp32 file. Where a target is missed, the onnxruntime per-op-type profile shows where time goes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from fat_deploy.environment import host_info
from fat_deploy.exporters import export
from fat_deploy.exporters.calibration import recalibrate_batchnorm
from fat_deploy.latency.harness import measure
from fat_deploy.models import create_model, get_spec
from fat_deploy.runtimes import backend_for_format

MODES = [("onnx", "fp32"), ("onnx", "int8-dynamic"), ("onnx", "int8-static"),
         ("tflite", "fp32"), ("tflite", "int8-dynamic"), ("tflite", "int8-weights"), ("tflite", "int8-static"),
         ("executorch", "fp32"), ("executorch", "int8-static"),
         ("coreml", "fp16"), ("coreml", "int8-weights"), ("coreml", "palettize-6"), ("coreml", "w8a8")]
BACKEND = {fmt: backend_for_format(fmt).name for fmt in ("onnx", "tflite", "executorch")}  # Core ML: macOS only


def op_profile(path: Path, runs: int = 20) -> dict[str, float]:
    """Mean ms per run spent in each ONNX op type (onnxruntime's own profiler, 1 thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--checkpoint", help="trained FAT-B0 weights (default: BN-recalibrated random weights)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            model = recalibrate_batchnorm(create_model("fat_b0"), get_spec("fat_b0"), (224, 224))
            checkpoint = str(out / "fat_b0_bn_recalibrated.pth")
            torch.save(model.state_dict(), checkpoint)
        results = {}
        for fmt, precision in MODES:
            artifact = export("fat_b0", fmt, precision, out / "verified", checkpoint=checkpoint, force=True)
            path = artifact.path
            if path is None:  # refused (collapse): export unverified only to time it
                path = export("fat_b0", fmt, precision, out / "unverified", checkpoint=checkpoint,
                              verify=False, force=True).path
            timing = None
            if fmt in BACKEND and path is not None:
                timing = measure("fat_b0", BACKEND[fmt], artifact=path, threads=1, runs=args.runs, warmup=10).median_ms
            size = None if path is None else sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")))
            results[(fmt, precision)] = (artifact, path, timing, size)
        profiles = (op_profile(results[("onnx", "fp32")][1]), op_profile(results[("onnx", "int8-static")][1]))

    print(f"host: {host_info()}; torch {torch.__version__}; FAT-B0 224, batch 1, 1 thread, {args.runs} runs; "
          f"weights: {'given checkpoint' if args.checkpoint else 'random init, BN recalibrated on photos'}")
    print(f"{'format':7s} {'mode':13s} {'status':22s} {'cosine':>7s} {'SQNR dB':>8s} {'top-1':>6s} "
          f"{'MB':>6s} {'x fp32 size':>11s} {'ms':>7s} {'x fp32 speed':>12s}  source")
    for (fmt, precision), (artifact, _path, timing, size) in results.items():
        base = results[(fmt, "fp32" if fmt != "coreml" else "fp16")]
        c = artifact.comparison or {}
        size_ratio = f"{size / base[3]:.2f}" if size and base[3] else "-"
        speed = f"{base[2] / timing:.2f}" if timing and base[2] else "-"
        print(f"{fmt:7s} {precision:13s} {artifact.status:22s} {c.get('cosine_min', float('nan')):7.4f} "
              f"{c.get('sqnr_db', float('nan')):8.1f} {c.get('top1_agreement', float('nan')):6.0%} "
              f"{(size or 0) / 1e6:6.2f} {size_ratio:>11s} {timing or float('nan'):7.2f} {speed:>12s}  "
              f"{c.get('source', '-')}")
    onnx_fp32, onnx_static = results[("onnx", "fp32")], results[("onnx", "int8-static")]
    tfl_fp32, tfl_dyn = results[("tflite", "fp32")], results[("tflite", "int8-dynamic")]
    speed = onnx_fp32[2] / onnx_static[2]
    cosine = (onnx_static[0].comparison or {}).get("cosine_min", float("nan"))
    print(f"target onnxruntime int8-static >= 1.4x and cosine >= 0.99: x{speed:.2f}, cosine {cosine:.4f} -> "
          f"{'met' if speed >= 1.4 and cosine >= 0.99 else 'MISSED'}")
    speed = tfl_fp32[2] / tfl_dyn[2]
    print(f"target TFLite int8-dynamic >= 1.5x TFLite fp32: x{speed:.2f} -> {'met' if speed >= 1.5 else 'MISSED'}")
    for (fmt, precision), (_a, _p, _t, size) in results.items():
        if fmt != "coreml" and (precision.startswith("int8") or precision == "w8a8") and size:
            ratio = size / results[(fmt, "fp32")][3]
            print(f"size {fmt} {precision}: {ratio:.2f}x fp32 -> {'met' if ratio <= 0.3 else 'MISSED'} (<= 0.3x)")
    print("Core ML sizes are against its fp16 artifact (a 0.5x fp32 file already); fp32 Core ML is not exported here")
    print("onnxruntime profile, ms per run by op type (fp32 | int8-static):")
    fp32_ops, static_ops = profiles
    for op in list(dict.fromkeys([*list(fp32_ops)[:6], *list(static_ops)[:6]])):
        print(f"  {op:24s} {fp32_ops.get(op, 0):7.2f} | {static_ops.get(op, 0):7.2f}")


if __name__ == "__main__":
    main()
