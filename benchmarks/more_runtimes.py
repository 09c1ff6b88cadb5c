"""OpenVINO, MNN and ncnn for FAT-B0: fat-export's files against each runtime's generic path, OpenVINO int8 (NNCF)
against fp32, and every fp32 runtime side by side, in one run.

    .venv/bin/python benchmarks/more_runtimes.py [--runs 50]

"Generic" OpenVINO is what its documentation's calls give any nn.Module: ``ov.convert_model(model)``,
``ov.save_model`` (float16 weights unless told not to) and ``core.compile_model(xml, "CPU")`` (bfloat16 arithmetic
on CPUs with AVX512_BF16 or AMX). "Generic" MNN is ``torch.onnx.export`` of the faithful model then MNN's
converter, loaded with MNN's defaults (precision normal, Winograd level 3). "Generic" ncnn is pnnx on the faithful
model (fp32 weights and arithmetic, as ours). "Ours" is ``fat-export``: the deploy
form, OpenVINO's static-shape IR with float32 weights loaded with ``INFERENCE_PRECISION_HINT=f32``, MNN's
exact-GELU form loaded with precision high and Winograd level 1. Accuracy is the
max abs difference from the faithful PyTorch model on the verification photos; speed is the median of alternating
single-thread runs at 224 px, batch 1, random weights. Targets (issue): int8 >= 2.0x its fp32 speed; the fastest
fp32 runtime for FAT-B0 named.
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
from fat_deploy.common.calibration import verification_inputs
from fat_deploy.contract.session import LoadRequest, Runner
from fat_deploy.contract.timing import time_interleaved
from fat_deploy.environment import host_info
from fat_deploy.exporters import export
from fat_deploy.models import create_model, get_spec
from fat_deploy.registry import backend_for_format, recorded_versions
from fat_deploy.runtimes.mnn.converter import mnn_convert
from fat_deploy.runtimes.mnn.session import MnnRunner
from fat_deploy.runtimes.mnn.standalone import INPUT_NAME, OUTPUT_NAME
from fat_deploy.runtimes.ncnn.converter import pnnx_convert
from fat_deploy.runtimes.ncnn.session import NcnnRunner
from fat_deploy.runtimes.ncnn.standalone import load as ncnn_load
from fat_deploy.runtimes.openvino.session import OpenVinoRunner
from fat_deploy.runtimes.openvino.standalone import openvino_module

SIZE = (224, 224)
FP32_FORMATS = ("onnx", "tflite", "executorch", "openvino", "mnn", "ncnn")


def default_compiled(xml: Path) -> OpenVinoRunner:
    """An IR compiled as the documentation's one call does: no settings but the thread count."""
    core = openvino_module().Core()
    return OpenVinoRunner(core, core.read_model(str(xml)), 1, settings={"INFERENCE_NUM_THREADS": 1})


def generic_ir(model: torch.nn.Module, folder: Path) -> Path:
    ov = openvino_module()
    folder.mkdir()
    ov.save_model(ov.convert_model(model, example_input=torch.randn(1, 3, *SIZE)), str(folder / "model.xml"))
    return folder / "model.xml"


def generic_mnn(model: torch.nn.Module, folder: Path) -> MnnRunner:
    import MNN

    folder.mkdir()
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 3, *SIZE),), folder / "model.onnx", input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=20, dynamo=True, external_data=False)
    mnn_convert(folder / "model.onnx", folder / "model.mnn", fp16=False)
    manager = MNN.nn.create_runtime_manager(({"numThread": 1},))
    module = MNN.nn.load_module_from_file(str(folder / "model.mnn"), [INPUT_NAME], [OUTPUT_NAME],
                                          runtime_manager=manager)
    return MnnRunner(module)


def generic_ncnn(model: torch.nn.Module, folder: Path) -> NcnnRunner:
    """pnnx's one-call path on the faithful model (its GroupNorm(1, C) becomes a per-channel ncnn LayerNorm)."""
    pnnx_convert(model, torch.randn(1, 3, *SIZE), folder, fp16=False)
    return NcnnRunner(ncnn_load(str(folder), 1).net)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    faithful = create_model("fat_b0").eval()
    photos, _ = verification_inputs(get_spec("fat_b0"), SIZE)
    with torch.no_grad():
        reference = faithful(torch.from_numpy(photos)).numpy()
    with tempfile.TemporaryDirectory() as folder, quiet(verbose=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Path(folder)
        checkpoint = out / "weights.pt"
        torch.save(faithful.state_dict(), checkpoint)
        runners: dict[str, Runner] = {}
        for fmt in FP32_FORMATS:
            artifact = export("fat_b0", fmt, out=out / "ours", checkpoint=checkpoint)
            assert artifact.path is not None, artifact.error
            runners[f"{fmt} fp32 (fat-export)"] = backend_for_format(fmt).load(
                LoadRequest("", None, artifact.path, 1, SIZE, threads=1))
        int8 = export("fat_b0", "openvino", "int8-static", out=out / "ours", checkpoint=checkpoint)
        assert int8.path is not None, int8.error
        runners["openvino int8-static (fat-export, NNCF)"] = backend_for_format("openvino").load(
            LoadRequest("", None, int8.path, 1, SIZE, threads=1))
        generic = default_compiled(generic_ir(faithful, out / "generic"))
        computes = generic.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        runners[f"openvino generic (fp16 weights, {computes} compute)"] = generic
        runners["mnn generic (ONNX Gelu, MNN defaults)"] = generic_mnn(faithful, out / "generic-mnn")
        runners["ncnn generic (pnnx of the faithful model)"] = generic_ncnn(faithful, out / "generic-ncnn")
        errors = {name: float(np.abs(np.concatenate([r.logits(r.prepare(photos[i:i + 1])) for i in range(len(photos))])
                                     - reference).max()) for name, r in runners.items()}
        inputs = np.random.default_rng(0).standard_normal((1, 3, *SIZE)).astype(np.float32)
        samples = time_interleaved({name: (r, r.prepare(inputs)) for name, r in runners.items()}, warmup=3,
                                   runs=args.runs)
    medians = {name: statistics.median(times) for name, times in samples.items()}
    host = host_info()
    cpu = (f"{host['cpu']} ({host['cpu_vendor']} family {host['cpu_family']} model {host['cpu_model_number']}; "
           f"{' '.join(map(str, host['cpu_isa']))})")  # type: ignore[call-overload]
    print(f"FAT-B0, 224 px, batch 1, 1 thread, {args.runs} alternating runs, random weights; host: {cpu}; "
          + ", ".join(f"{k} {v}" for k, v in recorded_versions().items()))
    print("| artifact | median ms | max abs diff vs PyTorch |\n|---|---|---|")
    for name in runners:
        print(f"| {name} | {medians[name]:.2f} | {errors[name]:.1e} |")
    ours, quantized = medians["openvino fp32 (fat-export)"], medians["openvino int8-static (fat-export, NNCF)"]
    fastest = min((name for name in medians if "fp32 (fat-export)" in name), key=medians.__getitem__)
    print(f"\nOpenVINO int8 / fp32 speed-up: {ours / quantized:.2f}x (target 2.0x); fastest fp32 runtime: {fastest}")
    for runtime in ("openvino", "mnn", "ncnn"):
        generic_name = next(n for n in medians if n.startswith(f"{runtime} generic"))
        print(f"generic {runtime} vs ours: {medians[generic_name] / medians[f'{runtime} fp32 (fat-export)']:.2f}x the time")


if __name__ == "__main__":
    main()
