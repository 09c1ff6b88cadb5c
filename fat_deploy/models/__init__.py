"""Model registry, the FAT family, safe checkpoint loading, deploy form and profiling."""

from fat_deploy.models.deploy import to_deploy
from fat_deploy.models.profiling import Profile, count_params, profile
from fat_deploy.models.registry import ModelSpec, create_model, get_spec, list_models

__all__ = [
    "ModelSpec",
    "Profile",
    "count_params",
    "create_model",
    "get_spec",
    "list_models",
    "profile",
    "to_deploy",
]
