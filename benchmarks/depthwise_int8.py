"""Does an int8 depthwise convolution pay on this CPU? LiteRT's XNNPACK against ExecuTorch's, one run.

    .venv/bin/python benchmarks/depthwise_int8.py [--runs 200]

FAT's deploy form is mostly depthwise convolutions (5x5 tiles, 3x3 ones) between 1x1 ones. For each shape, two
small models are converted by each runtime, fp32 and static int8 (per-channel int8 weights, int8 activations):
``1x1 (3->C) -> depthwise KxK -> 1x1`` and the same without the depthwise conv; the depthwise conv's time is the
difference of their medians (all eight files timed in turn, 1 thread, batch 1). The model without it is the GEMM
part: its own fp32/int8 ratio (``1x1 int8 x``, quantizing the input and dequantizing the output included) says what
int8 does for the dense layers, which the depthwise conv's ratio can then be read beside. TFLite: litert-torch, then
ai-edge-quantizer's static W8A8 recipe (int8 input too; the difference cancels it). ExecuTorch: PT2E with
``XNNPACKQuantizer``'s global symmetric configuration, lowered to XNNPACK. Each runtime carries its own XNNPACK
build, so the same operator can run different kernels. The x86 ISA is printed: kernels differ by ISA, and x86
kernels are not the ARM ones a phone runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from fat_deploy.cli.common import quiet
from fat_deploy.contract.session import LoadRequest, Runner
from fat_deploy.contract.timing import time_interleaved
from fat_deploy.environment import host_info, int8_isa
from fat_deploy.registry import get_backend
from fat_deploy.runtimes.executorch.converter import lower_to_xnnpack

SHAPES = ((96, 56, 5), (192, 28, 5), (384, 14, 5), (64, 56, 3), (192, 28, 3))  # channels, side, kernel


class Pointwise(nn.Module):
    """1x1 (3 -> C), an optional KxK depthwise conv, 1x1 (C -> C)."""

    def __init__(self, channels: int, kernel: int, depthwise: bool) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, channels, 1)
        self.depthwise: nn.Module = (nn.Conv2d(channels, channels, kernel, 1, kernel // 2, groups=channels)
                                     if depthwise else nn.Identity())
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.depthwise(self.expand(x)))


def tflite_files(model: nn.Module, example: torch.Tensor, samples: torch.Tensor, folder: Path) -> dict[str, Path]:
    import litert_torch
    from ai_edge_quantizer import quantizer, recipe

    float_path, int8_path = folder / "fp32.tflite", folder / "int8.tflite"
    with torch.no_grad():
        litert_torch.convert(model, (example,)).export(str(float_path))
    engine = quantizer.Quantizer(str(float_path))
    engine.load_quantization_recipe(recipe.static_wi8_ai8())
    calibration = engine.calibrate({"serving_default": [{"args_0": s[None].numpy()} for s in samples]})
    engine.quantize(calibration, enable_progress_report=False).export_model(str(int8_path))
    return {"fp32": float_path, "int8": int8_path}


def executorch_files(model: nn.Module, example: torch.Tensor, samples: torch.Tensor, folder: Path) -> dict[str, Path]:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
        for sample in samples:
            prepared(sample[None])
        quantized = convert_pt2e(prepared)
    paths = {}
    for precision, form in (("fp32", model), ("int8", quantized)):
        program, _ = lower_to_xnnpack(form, example)
        paths[precision] = folder / f"{precision}.pte"
        paths[precision].write_bytes(program)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--verbose", action="store_true", help="show the converters' own output")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"host: {host_info()}; int8 ISA: {int8_isa()}; torch {torch.__version__}; 1 thread, batch 1, "
          f"{args.runs} interleaved runs; ms of one depthwise conv (median with it - median without it); "
          "int8 x: fp32 ms / int8 ms (above 1: int8 is faster); 1x1 int8 x: the same for the model without it")
    print(f"{'shape':<22} {'TFLite fp32':>11} {'TFLite int8':>11} {'int8 x':>6} {'1x1 int8 x':>10} "
          f"{'ET fp32':>8} {'ET int8':>8} {'int8 x':>6} {'1x1 int8 x':>10}")
    converters = {"tflite": tflite_files, "executorch": executorch_files}
    for channels, side, kernel in SHAPES:
        example, samples = torch.randn(1, 3, side, side), torch.randn(16, 3, side, side)
        runs_of: dict[str, tuple[Runner, object]] = {}
        with tempfile.TemporaryDirectory() as folder, quiet(args.verbose):
            for runtime, convert in converters.items():
                for depthwise in (True, False):
                    model = Pointwise(channels, kernel, depthwise).eval()
                    where = Path(folder) / f"{runtime}-{depthwise}"
                    where.mkdir()
                    for precision, path in convert(model, example, samples, where).items():
                        runner = get_backend(runtime).load(LoadRequest(model_name="depthwise", model=None, artifact=path,
                                                                       batch=1, img_size=(side, side), threads=1))
                        runs_of[f"{runtime} {precision} {depthwise}"] = (runner, runner.prepare(example.numpy()))
            medians = {key: statistics.median(times) for key, times in time_interleaved(runs_of, 20, args.runs).items()}
        cost = {key.removesuffix(" True"): medians[key] - medians[key.replace("True", "False")]
                for key in medians if key.endswith("True")}
        tfl_fp32, tfl_int8, et_fp32, et_int8 = (cost[key] for key in ("tflite fp32", "tflite int8", "executorch fp32",
                                                                         "executorch int8"))
        dense = {runtime: medians[f"{runtime} fp32 False"] / medians[f"{runtime} int8 False"] for runtime in converters}
        print(f"{f'C={channels} {side}x{side} {kernel}x{kernel}':<22} {tfl_fp32:11.4f} {tfl_int8:11.4f} "
              f"{tfl_fp32 / tfl_int8:5.2f}x {dense['tflite']:9.2f}x {et_fp32:8.4f} {et_int8:8.4f} "
              f"{et_fp32 / et_int8:5.2f}x {dense['executorch']:9.2f}x")


if __name__ == "__main__":
    main()
