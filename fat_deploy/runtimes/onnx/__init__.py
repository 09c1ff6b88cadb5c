"""ONNX: export (torch.onnx dynamo, onnxsim), onnxruntime quantization, onnxruntime session, ORT Mobile checks."""

from fat_deploy.runtimes.base import Runtime
from fat_deploy.runtimes.onnx.converter import OnnxFormat
from fat_deploy.runtimes.onnx.session import OnnxRuntimeBackend

RUNTIME = Runtime(backend=OnnxRuntimeBackend(), export_format=OnnxFormat(),
                  packages=("onnx", "onnxruntime", "onnxsim", "onnxscript"))
