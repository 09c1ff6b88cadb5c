"""fat-latency targets for FAT-B0 (1 thread, batch 1), measured in one run on this machine.

    .venv/bin/python benchmarks/latency_targets.py [--runs 100]

Prints, as ratios of medians:
  * fat-export's ONNX on onnxruntime vs a plain ``torch.onnx.export`` of the faithful model (target >= 1.2x)
  * fat-export's ONNX vs PyTorch eager of the faithful model (target >= 2x)
  * TFLite fp32 (litert-torch) vs ONNX fp32 (informative)
  * harness repeatability: two back-to-back measurements, medians within 5%
  * harness overhead: its median vs a bare ``session.run`` loop on the same session (within 3%)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fat_deploy.contract.session import LoadRequest
from fat_deploy.contract.timing import time_runner
from fat_deploy.environment import host_info, native_stdout_to_stderr
from fat_deploy.latency.harness import measure
from fat_deploy.models import create_model
from fat_deploy.registry import get_backend


def verdict(ratio: float, target: float, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "meets target" if ok else "MISSES target"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    common = {"threads": 1, "runs": args.runs, "warmup": args.warmup}
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder)
        ours = measure("fat_b0", "onnxruntime", cache_dir=cache, **common)
        again = measure("fat_b0", "onnxruntime", artifact=ours.artifact, **common)
        eager = measure("fat_b0", "torch", deploy=False, **common)
        tflite = measure("fat_b0", "tflite", cache_dir=cache, **common)

        plain_path = cache / "plain.onnx"
        with native_stdout_to_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(create_model("fat_b0"), (torch.randn(1, 3, 224, 224),), str(plain_path))
        plain = measure("fat_b0", "onnxruntime", artifact=plain_path, **common)

        # Harness overhead: the same session, timed by a bare loop vs by the harness' loop.
        runner = get_backend("onnxruntime").load(LoadRequest("fat_b0", None, Path(ours.artifact), 1, (224, 224), 1))
        feed = runner.prepare(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))
        session = runner.session  # type: ignore[attr-defined]
        bare, harness = [], []
        for _ in range(args.warmup):
            session.run(None, feed)
        for _ in range(5):  # alternate blocks so drift hits both alike
            for _ in range(args.runs // 5):
                start = time.perf_counter()
                session.run(None, feed)
                bare.append((time.perf_counter() - start) * 1e3)
            harness += time_runner(runner, feed, 0, args.runs // 5, 0.0)[1]

    med = {k: v.median_ms for k, v in {"ours": ours, "again": again, "eager": eager, "tflite": tflite,
                                       "plain": plain}.items()}
    print(f"host: {host_info()}; torch {torch.__version__}; FAT-B0 224, batch 1, 1 thread, "
          f"{args.runs} timed runs after {args.warmup} warm-up; random weights")
    for key, label in (("ours", "fat-export ONNX (deploy form, onnxsim)"), ("plain", "plain torch.onnx.export"),
                       ("eager", "PyTorch eager (faithful model)"), ("tflite", "TFLite fp32 (litert-torch)")):
        print(f"  {label:42s} median {med[key]:7.2f} ms")
    ratio = med["plain"] / med["ours"]
    print(f"ours vs plain ONNX export: x{ratio:.2f} (target >= 1.2: {verdict(ratio, 1.2)})")
    ratio = med["eager"] / med["ours"]
    print(f"ours vs PyTorch eager:     x{ratio:.2f} (target >= 2.0: {verdict(ratio, 2.0)})")
    print(f"TFLite fp32 / ONNX fp32 latency: {med['tflite'] / med['ours']:.2f}")
    drift = abs(med["again"] - med["ours"]) / med["ours"]
    print(f"repeatability: medians {med['ours']:.2f} vs {med['again']:.2f} ms, {drift:.1%} apart "
          f"(target <= 5%: {verdict(drift, 0.05, higher_is_better=False)})")
    overhead = statistics.median(harness) / statistics.median(bare) - 1
    print(f"harness overhead vs bare session.run: {overhead:+.1%} "
          f"(target within 3%: {verdict(abs(overhead), 0.03, higher_is_better=False)})")


if __name__ == "__main__":
    main()
