"""PyTorch eager: the reference every artifact is compared with, and a latency backend (CPU, CUDA)."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.torch.session import TorchBackend

RUNTIME = Runtime(backend=TorchBackend(), packages=("torch", "timm"))
