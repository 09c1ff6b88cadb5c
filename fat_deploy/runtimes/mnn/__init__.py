"""MNN: the deploy form through ONNX into MNN's converter (exact GELU), run by MNN's CPU backend in fp32."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.mnn.converter import MnnFormat

RUNTIME = Runtime(backend=MnnFormat.backend, export_format=MnnFormat(), packages=("MNN",))
