"""fat-deploy: export, verify and time the FAT vision backbone on edge runtimes."""

from fat_deploy.errors import FatDeployError
from fat_deploy.models import ModelSpec, create_model, get_spec, list_models, profile, to_deploy

__version__ = "0.1.0"

__all__ = [
    "FatDeployError",
    "ModelSpec",
    "__version__",
    "create_model",
    "get_spec",
    "list_models",
    "profile",
    "to_deploy",
]
