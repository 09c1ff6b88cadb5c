"""ExecuTorch: ``.pte`` programs lowered to XNNPACK (fp32, PT2E int8-static), run by ``executorch.runtime``."""

from fat_deploy.runtimes.base import Runtime
from fat_deploy.runtimes.executorch.converter import ExecuTorchFormat
from fat_deploy.runtimes.executorch.session import ExecuTorchBackend

RUNTIME = Runtime(backend=ExecuTorchBackend(), export_format=ExecuTorchFormat(), packages=("executorch", "torchao"))
