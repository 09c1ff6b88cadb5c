"""TFLite through litert-torch (no TensorFlow), run with the LiteRT interpreter (ai-edge-litert)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fat_deploy.exporters.calibration import batches, unbatch
from fat_deploy.exporters.registry import ExportFormat, ExportRequest, register_format

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # quiet the converter's native INFO lines
os.environ.setdefault("GLOG_minloglevel", "2")


def op_histogram(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(str(path))._get_ops_details()
    return dict(Counter(op["op_name"] for op in details).most_common())


def non_builtin_ops(ops: dict[str, int]) -> list[str]:
    """Flex (TensorFlow) and custom ops: they fail in a plain LiteRT runtime."""
    return sorted(op for op in ops if op.startswith("Flex") or op.upper() == "CUSTOM" or "DELEGATE" in op.upper())


class TFLiteFormat(ExportFormat):
    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16")
    runtime = "ai-edge-litert"
    converter_modules = ("litert_torch", "ai_edge_litert")
    extra = "tflite"
    supported_options = frozenset({"nhwc"})

    def convert(self, request: ExportRequest, path: Path) -> dict[str, Any]:
        import litert_torch
        from litert_torch import _config

        _config.config.show_progress = False  # fat-export draws its own progress
        model = request.model
        example = torch.randn(request.batch, 3, *request.img_size)
        if request.nhwc:
            model = litert_torch.to_channel_last_io(model, args=[0])
            example = example.permute(0, 2, 3, 1).contiguous()
        with torch.no_grad():
            litert_torch.convert(model.eval(), (example,)).export(str(path))
        details: dict[str, Any] = {"converter": "litert-torch", "runtime": "ai-edge-litert (XNNPACK)"}
        if request.precision == "fp16":
            details["quantizer"] = self._to_fp16_weights(path)
        ops = op_histogram(path)
        details.update({"ops": ops, "nodes": sum(ops.values())})
        if bad := non_builtin_ops(ops):
            raise RuntimeError(f"TFLite graph needs non-builtin ops {bad}; only builtin ops are allowed")
        return details

    @staticmethod
    def _to_fp16_weights(path: Path) -> str:
        from ai_edge_quantizer import qtyping, quantizer
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        fp16 = quantizer.Quantizer(str(path))
        fp16.add_weight_only_config(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
            algorithm_key=AlgorithmName.FLOAT_CASTING,
        )
        result = fp16.quantize()
        path.unlink()
        result.export_model(str(path))
        return "ai-edge-quantizer float16 weight casting (fp32 compute, DEQUANTIZE at load)"

    def interpreter(self, path: Path, threads: int = 1) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(str(path), num_threads=threads)
        interpreter.allocate_tensors()
        return interpreter

    def run(self, path: Path, request: ExportRequest, inputs: np.ndarray, batch: int) -> np.ndarray:
        interpreter = self.interpreter(path)
        (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
        outputs = []
        for group in batches(inputs, batch):
            feed = group.transpose(0, 2, 3, 1) if request.nhwc else group
            interpreter.set_tensor(source["index"], np.ascontiguousarray(feed, dtype=np.float32))
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(target["index"]).copy())
        return unbatch(outputs, len(inputs))

    def inspect(self, path: Path, request: ExportRequest) -> list[str]:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(str(path))
        (source,) = interpreter.get_input_details()
        expected = self.io_spec(request)["input"]["shape"]
        if list(source["shape"]) != expected:
            return [f"input shape {list(source['shape'])} != expected {expected}"]
        return []

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        height, width = request.img_size
        shape = [request.batch, height, width, 3] if request.nhwc else [request.batch, 3, height, width]
        return {
            "input": {"name": "serving_default_args_0", "index": 0, "shape": shape, "dtype": "float32",
                      "layout": "NHWC" if request.nhwc else "NCHW"},
            "output": {"index": 0, "shape": [request.batch, request.num_classes], "dtype": "float32", "meaning": "logits"},
        }


register_format(TFLiteFormat())
