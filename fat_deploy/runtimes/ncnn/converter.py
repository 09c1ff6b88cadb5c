"""ncnn files (a ``.ncnn/`` folder: ``model.ncnn.param`` + ``model.ncnn.bin``) through pnnx, from the ncnn form.

pnnx (ncnn's PyTorch converter) turns FAT's deploy-form norm, a LayerNorm over (C, H, W), into an ncnn ``LayerNorm``
that normalises each channel over H x W instead (measured: FAT-B0's logits 1.93 from PyTorch, relative 1.1, a
file that loads and runs and is wrong). The ncnn form writes every such norm as means (over H x W per channel, then
over C: :class:`~fat_deploy.models.deploy.ReducedChannelSpatialNorm`), which pnnx maps to ncnn ``Reduction`` ops
that compute what PyTorch computes (9.5e-7). Unlike LiteRT's form it keeps FAT's 7x7 depthwise kernels whole: ncnn
runs them natively, and the 5x5 tiles cost it 7.6x (108 vs 14 ms, FAT-B0, 1 thread, this AMD EPYC host).

pnnx runs as its own executable on a TorchScript trace, in a private temporary folder (it writes several side
files next to its input); only the param/bin pair is kept, with the input shape written into the param file's
``Input`` layer so the session can refuse another size. ``fp16``: pnnx's float16 weight storage.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.contract.coverage import Coverage
from fat_deploy.contract.formats import Conversion, ExportFormat, ExportRequest, UnsupportedOptionError
from fat_deploy.environment import native_stdout_to_stderr
from fat_deploy.models.deploy import ChannelSpatialNorm, ReducedChannelSpatialNorm
from fat_deploy.precision import Precision
from fat_deploy.runtimes.ncnn.coverage import ncnn_coverage
from fat_deploy.runtimes.ncnn.guide import guide
from fat_deploy.runtimes.ncnn.session import NcnnBackend
from fat_deploy.runtimes.ncnn.standalone import BIN, INPUT_NAME, OUTPUT_NAME, PARAM, every_blob

CONVERT_TIMEOUT_S = 600
log = logging.getLogger(__name__)


def ncnn_form(model: nn.Module) -> nn.Module:
    """Every LayerNorm over (C, H, W) as means over H x W then C (in place; the same function, float rounding
    aside); the float16-safe input scale is kept."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is ChannelSpatialNorm:
                reduced = ReducedChannelSpatialNorm(child.eps, child.weight, child.bias)
                reduced.input_scale, reduced.channel_mean_by_reshape = child.input_scale, False
                setattr(parent, name, reduced)
    return model


def with_input_shape(param: Path, channels: int, height: int, width: int) -> None:
    """Write the input shape into the param file's ``Input`` layer (ncnn's params 0=w 1=h 2=c)."""
    lines = param.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines[2:], start=2):
        fields = line.split()
        if fields and fields[0] == "Input":
            lines[index] = f"{line} 0={width} 1={height} 2={channels}"
            break
    else:
        raise RuntimeError("pnnx wrote no Input layer")
    param.write_text("\n".join(lines) + "\n", encoding="utf-8")


def pnnx_convert(model: nn.Module, example: torch.Tensor, folder: Path, fp16: bool) -> str:
    """Trace ``model``, run pnnx on the trace in a private folder, and move the ncnn pair into ``folder``; pnnx's
    output (for --verbose)."""
    import pnnx

    shape = ",".join(str(d) for d in example.shape)
    with tempfile.TemporaryDirectory(prefix="fat-deploy-pnnx-") as scratch:
        work = Path(scratch)
        with torch.no_grad(), native_stdout_to_stderr():
            traced = torch.jit.trace(model.eval(), example, check_trace=False)  # type: ignore[no-untyped-call]
            traced.save(str(work / "model.pt"))
        done = subprocess.run([pnnx.EXEC_PATH, "model.pt", f"inputshape=[{shape}]", f"ncnnparam={PARAM}",
                               f"ncnnbin={BIN}", f"fp16={int(fp16)}"], cwd=work, capture_output=True, text=True,
                              timeout=CONVERT_TIMEOUT_S, check=False)
        if done.returncode != 0 or not (work / PARAM).is_file() or not (work / BIN).is_file():
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit {done.returncode}"]
            raise RuntimeError(f"pnnx wrote no ncnn model: {last[0][:200]}")
        folder.mkdir()
        for name in (PARAM, BIN):
            shutil.move(str(work / name), folder / name)
    with_input_shape(folder / PARAM, *example.shape[1:])
    return done.stdout + done.stderr


def is_ncnn_folder(path: Path) -> bool:
    """An artifact folder as fat-export writes it: the param/bin pair, regular files, nothing else."""
    if path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    return sorted(e.name for e in entries) == sorted([BIN, PARAM]) and all(
        e.is_file() and not e.is_symlink() for e in entries)


class NcnnFormat(ExportFormat):
    backend = NcnnBackend()
    name = "ncnn"
    suffix = ".ncnn"
    precisions = (Precision.FP32, Precision.FP16)
    runtime = "ncnn (CPU, fp32 storage and arithmetic)"
    converter_modules = ("ncnn", "pnnx")
    extra = "ncnn"
    bundle_platform = "android"
    float16_on_devices = "ncnn's defaults (fp16 storage and arithmetic on ARMv8.2 CPUs; Vulkan GPUs)"
    intermediates_reader = "ncnn, every blob extracted from one extractor (light mode off)"

    def runtime_form(self, deployed: nn.Module) -> nn.Module:
        return ncnn_form(deployed)

    def is_artifact(self, path: Path) -> bool:
        return is_ncnn_folder(path)

    def coverage(self, path: Path) -> Coverage:
        return ncnn_coverage(path)

    def intermediate_tensors(self, path: Path, request: ExportRequest, image: np.ndarray) -> list[np.ndarray] | None:
        return every_blob(path, image)

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return guide(file_name, manifest)

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        return {
            "input": {"name": INPUT_NAME, "shape": [1, 3, *request.img_size], "dtype": "float32", "layout": "NCHW",
                      "file": PARAM},
            "output": {"name": OUTPUT_NAME, "shape": [1, request.num_classes], "dtype": "float32", "meaning": "logits"},
        }

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        if request.batch != 1 or request.dynamic_batch:
            raise UnsupportedOptionError("ncnn runs one image per extraction: export with --batch 1 (an app loops)")
        output = pnnx_convert(request.model, torch.randn(1, 3, *request.img_size), path,
                              fp16=request.precision == Precision.FP16)
        log.debug("pnnx output:\n%s", output)
        return Conversion(details={
            "converter": "torch.jit.trace -> pnnx (its own executable, in a private folder)",
            "weights": "float16 (pnnx fp16=1)" if request.precision == Precision.FP16 else "float32 (pnnx fp16=0)",
            "norms": "LayerNorm over (C, H, W) written as means over H x W then C (pnnx maps the LayerNorm to a "
                     "per-channel ncnn LayerNorm)",
            "runtime_settings": "fp32 storage and arithmetic, Vulkan off"})
