"""``.ort`` files for ONNX Runtime Mobile (https://onnxruntime.ai/docs/reference/ort-format-models.html).

The model is exported exactly as ``--format onnx`` does (same options, precisions and quantization), then
converted with onnxruntime's own ``convert_onnx_models_to_ort``: the "Fixed" optimization style for ARM (the
converter leaves out the x86-only NCHWc layout, so the file runs on any ORT Mobile build), and the operator list
a reduced ORT build needs (``required_operators.config``), kept in the manifest.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

from fat_deploy.exporters.registry import ExportRequest
from fat_deploy.runtimes.onnx.converter import OnnxFormat

TARGET_PLATFORM = "arm"


class OrtMobileFormat(OnnxFormat):
    name = "ort"
    suffix = ".ort"
    runtime = "onnxruntime (ORT format)"

    def convert(self, request: ExportRequest, path: Path) -> dict[str, Any]:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

        with tempfile.TemporaryDirectory(dir=path.parent) as folder:
            onnx_path = Path(folder) / f"{path.stem}.onnx"
            details = super().convert(request, onnx_path)
            out = Path(folder) / "ort"
            with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its progress
                convert_onnx_models_to_ort(onnx_path, output_dir=out, optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=TARGET_PLATFORM)
            (converted,) = out.glob("*.ort")
            (config,) = out.glob("*.config")
            converted.replace(path)
            # The converter names the temporary file it read; the manifest names the artifact instead.
            lines = [line for line in config.read_text(encoding="utf-8").splitlines() if not line.startswith("# - ")]
            operators = "\n".join([lines[0], f"# - {path.name}", *lines[1:]]) + "\n"
        details.update({
            "ort_converter": "onnxruntime.tools.convert_onnx_models_to_ort",
            "ort_optimization": f"Fixed style, target platform {TARGET_PLATFORM} (no NCHWc: portable)",
            "required_operators_config": operators,
        })
        return details
