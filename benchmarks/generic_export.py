"""FAT-B0 from fat-export against the generic one-call export of the same model, per runtime, in one run.

    .venv/bin/python benchmarks/generic_export.py [--runs 50]

"Generic" is what a one-line exporter (e.g. Ultralytics' torch2onnx / torch2litert / torch2executorch) does with
any nn.Module: each converter's documented one-call export of the faithful model: ``torch.onnx.export`` at
opset 14, ``litert_torch.convert``, ``to_edge_transform_and_lower`` with the XNNPACK partitioner. "Ours" is
``fat-export`` (deploy form, the runtime's own form, the converter settings in fat_deploy/runtimes/). Every
artifact is timed with the same runner, 1 thread, batch 1, alternating, on a random-weight FAT-B0 at 224.
Also printed: each runtime against onnxruntime, and FAT-B0 / EdgeViT-XXS per runtime (their MAC ratio is 1.27).
Targets: ours >= 1.5x the generic export on TFLite and ExecuTorch, >= 1.1x on onnxruntime; FAT-B0 on TFLite
and ExecuTorch <= 1.0x its onnxruntime time; FAT-B0 / EdgeViT-XXS <= 1.3 on every runtime.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from fat_deploy.cli.common import quiet
from fat_deploy.contract.session import LoadRequest
from fat_deploy.contract.timing import time_interleaved
from fat_deploy.environment import host_info
from fat_deploy.exporters import export
from fat_deploy.models import create_model
from fat_deploy.registry import backend_for_format, recorded_versions

FORMATS = ("onnx", "tflite", "executorch")
SIZE = (224, 224)


def generic_export(fmt: str, model: torch.nn.Module, path: Path) -> Path:
    """The converter's one-call export of ``model`` as it is (no rewrites)."""
    example = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        if fmt == "onnx":
            torch.onnx.export(model, (example,), str(path), opset_version=14, dynamo=False)
        elif fmt == "tflite":
            import litert_torch

            litert_torch.convert(model, (example,)).export(str(path))
        else:
            from fat_deploy.runtimes.executorch.converter import lower_to_xnnpack

            path.write_bytes(lower_to_xnnpack(model, example)[0])
    return path


def time_alternating(paths: dict[tuple[str, str, str], Path], runs: int) -> dict[tuple[str, str, str], float]:
    """Median ms of each artifact, invoked in turn by the harness (three warm-up rounds)."""
    inputs = np.random.default_rng(0).standard_normal((1, 3, *SIZE)).astype(np.float32)
    pairs = {}
    for key, path in paths.items():
        runner = backend_for_format(key[1]).load(LoadRequest("", None, path, 1, SIZE, threads=1))
        pairs["/".join(key)] = (runner, runner.prepare(inputs))
    samples = time_interleaved(pairs, warmup=3, runs=runs)
    return {key: statistics.median(samples["/".join(key)]) for key in paths}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, quiet(verbose=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Path(folder)
        paths: dict[tuple[str, str, str], Path] = {}
        for model in ("fat_b0", "edgevit_xxs"):
            for fmt in FORMATS:
                artifact = export(model, fmt, out=out / "ours")
                assert artifact.path is not None, artifact.error
                paths[(model, fmt, "ours")] = artifact.path
        torch.manual_seed(0)
        faithful = create_model("fat_b0").eval()
        suffix = {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte"}
        for fmt in FORMATS:
            paths[("fat_b0", fmt, "generic")] = generic_export(fmt, faithful, out / f"generic{suffix[fmt]}")
        ms = time_alternating(paths, args.runs)
    host = host_info()
    versions = recorded_versions()
    print(f"host: {host['cpu']} ({host.get('cpu_vendor')} family {host.get('cpu_family')} model "
          f"{host.get('cpu_model_number')}), {host['cores']} cores; 1 thread, batch 1, {args.runs} runs, "
          f"random weights; " + ", ".join(f"{k} {versions[k]}" for k in ("torch", "onnxruntime", "ai-edge-litert",
                                                                         "executorch") if k in versions))
    print(f"{'runtime':12} {'ours ms':>9} {'generic ms':>11} {'ours faster':>12} {'vs onnxruntime':>15} "
          f"{'EdgeViT-XXS ms':>15} {'FAT-B0/EdgeViT':>15}")
    targets = {"onnx": 1.1, "tflite": 1.5, "executorch": 1.5}
    for fmt in FORMATS:
        ours, generic = ms[("fat_b0", fmt, "ours")], ms[("fat_b0", fmt, "generic")]
        peer = ms[("edgevit_xxs", fmt, "ours")]
        speedup = generic / ours
        print(f"{fmt:12} {ours:9.2f} {generic:11.2f} {speedup:11.2f}x {ours / ms[('fat_b0', 'onnx', 'ours')]:14.2f}x "
              f"{peer:15.2f} {ours / peer:15.2f}   "
              f"(target >= {targets[fmt]}x: {'met' if speedup >= targets[fmt] else 'MISSED'})")


if __name__ == "__main__":
    main()
