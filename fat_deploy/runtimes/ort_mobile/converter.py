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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.contract.coverage import Coverage, accelerators_line
from fat_deploy.contract.formats import Conversion, ExportRequest, UnsupportedOptionError
from fat_deploy.precision import Precision
from fat_deploy.runtimes.onnx.converter import OnnxFormat
from fat_deploy.runtimes.onnx.coverage import SOURCE_EPS, mobile_accelerators, ort_format_coverage
from fat_deploy.runtimes.ort_mobile.guide import OPERATORS_FILE, guide
from fat_deploy.runtimes.ort_mobile.session import OrtFormatBackend

TARGET_PLATFORM = "arm"


def merge_operator_configs(first: str, second: str) -> str:
    """Two ``required_operators.config`` texts as one: comments of both, the union of each domain/opset's ops."""
    comments, ops = list[str](), dict[tuple[str, str], set[str]]()
    for line in (*first.splitlines(), *second.splitlines()):
        if not line.strip() or line.startswith("#"):
            if line.strip() and line not in comments:
                comments.append(line)
            continue
        domain, opset, names = line.split(";")
        ops.setdefault((domain, opset), set()).update(filter(None, names.split(",")))
    body = [f"{domain};{opset};{','.join(sorted(names))}" for (domain, opset), names in sorted(ops.items())]
    return "\n".join([*comments, *body]) + "\n"


class OrtMobileFormat(OnnxFormat):
    backend = OrtFormatBackend()
    name = "ort"
    suffix = ".ort"
    runtime = "onnxruntime (ORT format)"
    bundle_platform = "android"
    intermediates_reader = None  # an ORT-format file cannot be given extra outputs: compare the .onnx it came from


    def intermediate_tensors(self, path: Path, request: ExportRequest, image: np.ndarray) -> list[np.ndarray] | None:
        return None
    def coverage(self, path: Path) -> Coverage:
        return ort_format_coverage(path)

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return guide(file_name, manifest)

    def write_bundle_extras(self, folder: Path, manifest: dict[str, Any]) -> list[str]:
        """The operator list of a reduced ORT build (the ORT Mobile files of one folder share it)."""
        target = folder / OPERATORS_FILE
        text = manifest["format_details"]["required_operators_config"]
        if target.exists():  # several .ort files: the union of their operators
            text = merge_operator_configs(target.read_text(encoding="utf-8"), text)
        target.write_text(text, encoding="utf-8")
        return [OPERATORS_FILE]

    def check_options(self, precision: Precision, options: dict[str, Any]) -> None:
        if options.get("image_bytes"):
            raise UnsupportedOptionError("--image-bytes needs onnxruntime-extensions' custom ops, which ORT Mobile's "
                                         "prebuilt packages lack; use --format onnx --image-bytes")
        super().check_options(precision, options)

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

        with tempfile.TemporaryDirectory(dir=path.parent) as folder:
            onnx_path = Path(folder) / f"{path.stem}.onnx"
            conversion = super().convert(request, onnx_path)
            eps = mobile_accelerators(onnx_path)
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
        conversion.details.update({
            "ort_converter": "onnxruntime.tools.convert_onnx_models_to_ort",
            "ort_optimization": f"Fixed style, target platform {TARGET_PLATFORM} (no NCHWc: portable)",
            "required_operators_config": operators,
            SOURCE_EPS: [asdict(accelerator) for accelerator in eps],
        })
        conversion.notes.append(accelerators_line(eps) + " (checked on the ONNX graph it was converted from)")
        return conversion
