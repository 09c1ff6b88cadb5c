"""MNN ``.mnn`` files: the deploy form (its GELUs written with ``erf``) exported to ONNX, then MNN's own converter.

MNN's converter turns an ONNX ``Gelu`` into its tanh approximation (measured: 4.7e-4 max abs error per GELU on
inputs of scale 3, which put FAT-B0's logits 2.6e-4 from onnxruntime's), while it keeps ``Erf`` exact; so the MNN
form writes GELU as ``x * 0.5 * (1 + erf(x / sqrt(2)))``, the same function, in an order MNN does not fuse back
into its approximate GELU. It costs time: MNN's ``erf`` is an elementwise kernel of its own (see README). The
converter is called through its native entry point (``_tools.mnnconvert``): the ``mnnconvert`` Python wrapper
reports usage to a remote log service and runs ``pip install`` when its log client is missing, which a build tool
must never do.
``fp16`` stores float16 weights (``--fp16``); the CPU here computes in float32 either way.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fat_deploy.contract.coverage import Coverage
from fat_deploy.contract.formats import Conversion, ExportFormat, ExportRequest
from fat_deploy.environment import native_stdout_to_stderr
from fat_deploy.precision import Precision
from fat_deploy.runtimes.mnn.coverage import mnn_coverage
from fat_deploy.runtimes.mnn.guide import guide
from fat_deploy.runtimes.mnn.session import MnnBackend
from fat_deploy.runtimes.mnn.standalone import INPUT_NAME, OUTPUT_NAME

ONNX_OPSET = 20
BIZ_CODE = "fat-deploy"
CONVERT_TIMEOUT_S = 600
# MNN's native converter (its ``mnnconvert`` Python wrapper phones home; see the module docstring).
CONVERT = "import sys, _tools; _tools.mnnconvert(sys.argv[1:])"
log = logging.getLogger(__name__)


class ErfGelu(nn.Module):
    """GELU exactly as ``nn.GELU()`` computes it, written with ``erf`` in an order MNN's converter does not fuse:
    it matches ``x * (erf(x / sqrt(2)) + 1) * 0.5`` into its own GELU, whose CPU kernel is approximate
    (measured: 2.5e-4 on FAT-B0's logits, as with ONNX ``Gelu``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


def mnn_form(model: nn.Module) -> nn.Module:
    """``model`` with every exact ``nn.GELU`` replaced by :class:`ErfGelu` (in place; same outputs)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.GELU) and child.approximate == "none":
            setattr(model, name, ErfGelu())
        else:
            mnn_form(child)
    return model


def mnn_convert(onnx_path: Path, mnn_path: Path, fp16: bool) -> None:
    """MNN's native converter in a child process whose working folder is a private temporary one: the converter
    writes, reads back and deletes ``.__convert_external_data.bin`` in its working folder (seen with strace), so two
    conversions in one folder corrupt each other's weights (measured: cosine 0 against PyTorch) and a user's file of
    that name would be lost."""
    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx_path.resolve()), "--MNNModel", str(mnn_path.resolve()),
            "--bizCode", BIZ_CODE, *(["--fp16"] if fp16 else [])]
    with tempfile.TemporaryDirectory(prefix="fat-deploy-mnn-") as scratch:
        done = subprocess.run([sys.executable, "-c", CONVERT, *argv], cwd=scratch, capture_output=True, text=True,
                              timeout=CONVERT_TIMEOUT_S, check=False)
    log.debug("MNN converter output:\n%s%s", done.stdout, done.stderr)
    if done.returncode != 0 or not mnn_path.is_file() or mnn_path.stat().st_size == 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise RuntimeError(f"MNN's converter wrote no model: {last[0][:200]}")


class MnnFormat(ExportFormat):
    backend = MnnBackend()
    name = "mnn"
    suffix = ".mnn"
    precisions = (Precision.FP32, Precision.FP16)
    runtime = "MNN (CPU, precision high)"
    converter_modules = ("MNN", "_tools", "onnx")
    extra = "mnn"
    bundle_platform = "android"
    float16_on_devices = "MNN's default precision (normal) on ARMv8.2 CPUs and its GPU backends"

    def runtime_form(self, deployed: nn.Module) -> nn.Module:
        return mnn_form(deployed)

    def coverage(self, path: Path) -> Coverage:
        return mnn_coverage(path)

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return guide(file_name, manifest)

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        return {
            "input": {"name": INPUT_NAME, "shape": [request.batch, 3, *request.img_size], "dtype": "float32",
                      "layout": "NCHW"},
            "output": {"name": OUTPUT_NAME, "shape": [request.batch, request.num_classes], "dtype": "float32",
                       "meaning": "logits"},
        }

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        onnx_path = path.with_suffix(".source.onnx")
        example = torch.randn(request.batch, 3, *request.img_size)
        try:
            with torch.no_grad(), native_stdout_to_stderr():
                torch.onnx.export(request.model.eval(), (example,), onnx_path, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], opset_version=ONNX_OPSET, dynamo=True,
                                  external_data=False, verbose=False)
            mnn_convert(onnx_path, path, fp16=request.precision == Precision.FP16)
        finally:
            onnx_path.unlink(missing_ok=True)
        return Conversion(details={
            "converter": f"torch.onnx (dynamo, opset {ONNX_OPSET}) -> MNN's converter (native, no telemetry)",
            "weights": "float16 (--fp16)" if request.precision == Precision.FP16 else "float32",
            "gelu": "written with erf (MNN's converter maps ONNX Gelu to a tanh approximation)",
            "runtime_settings": "precision high (fp32 arithmetic), Winograd memory level 1 (accurate 3x3 tiles)"})
