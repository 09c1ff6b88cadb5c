"""ExecuTorch: ``.pte`` programs lowered to XNNPACK (fp32, PT2E int8-static), run by ``executorch.runtime``."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.executorch.converter import ExecuTorchFormat

RUNTIME = Runtime(backend=ExecuTorchFormat.backend, export_format=ExecuTorchFormat(), packages=("executorch", "torchao"))
