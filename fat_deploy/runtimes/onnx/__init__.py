"""ONNX: export (torch.onnx dynamo, onnxsim), onnxruntime quantization, onnxruntime session, ORT Mobile checks."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.onnx.converter import OnnxFormat

RUNTIME = Runtime(backend=OnnxFormat.backend, export_format=OnnxFormat(),
                  packages=("onnx", "onnxruntime", "onnxsim", "onnxscript"))
