"""Deploy form vs faithful model: ONNX graph size and PyTorch eager latency, measured in one run.

    .venv/bin/python benchmarks/deploy_form.py [--model fat_b0] [--runs 50]

Prints medians of interleaved runs (1 thread, batch 1) and their ratio, with the environment.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fat_deploy.environment import host_info
from fat_deploy.exporters.api import ExportRequest
from fat_deploy.models import create_model, get_spec, to_deploy
from fat_deploy.runtimes.onnx.converter import OnnxFormat


def onnx_nodes(model: torch.nn.Module, name: str, size: int) -> tuple[int, int]:
    request = ExportRequest(model_name=name, spec=get_spec(name), reference=model, model=model, img_size=(size, size))
    with tempfile.TemporaryDirectory() as folder:
        details = OnnxFormat().convert(request, Path(folder) / "m.onnx").details
    return details["nodes_exported"], details["nodes"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="fat_b0")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = get_spec(args.model)
    faithful = create_model(args.model)
    deployed = to_deploy(faithful)
    x = torch.randn(1, 3, spec.input_size, spec.input_size)
    times: dict[str, list[float]] = {"faithful": [], "deploy": []}
    with torch.no_grad():
        for model in (faithful, deployed):
            for _ in range(5):
                model(x)
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            for label, model in (("faithful", faithful), ("deploy", deployed)):
                start = time.perf_counter()
                model(x)
                times[label].append((time.perf_counter() - start) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"host: {host_info()}; torch {torch.__version__}; 1 thread; batch 1; {args.runs} interleaved runs")
    print(f"eager median ms: faithful {med['faithful']:.2f}, deploy {med['deploy']:.2f}, "
          f"speed-up x{med['faithful'] / med['deploy']:.2f}")
    for label, model in (("faithful", faithful), ("deploy", deployed)):
        exported, simplified = onnx_nodes(model, args.model, spec.input_size)
        print(f"ONNX nodes ({label}): {exported} exported, {simplified} after onnxsim")


if __name__ == "__main__":
    main()
