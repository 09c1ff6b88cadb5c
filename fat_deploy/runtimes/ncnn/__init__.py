"""ncnn: the ncnn form (norms as means) through pnnx, run by ncnn's CPU path in fp32."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.ncnn.converter import NcnnFormat

RUNTIME = Runtime(backend=NcnnFormat.backend, export_format=NcnnFormat(), packages=("ncnn", "pnnx"))
