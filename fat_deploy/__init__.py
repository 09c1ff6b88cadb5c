"""fat-deploy: export, verify and time the FAT vision backbone on edge runtimes."""

from fat_deploy import telemetry  # noqa: F401  # first: the runtimes' telemetry is off before any is imported
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import Artifact, export
from fat_deploy.latency.harness import Measurement, measure
from fat_deploy.models import ModelSpec, create_model, get_spec, list_models, profile, to_deploy
from fat_deploy.version import __version__

__all__ = [
    "Artifact",
    "FatDeployError",
    "Measurement",
    "ModelSpec",
    "__version__",
    "create_model",
    "export",
    "get_spec",
    "list_models",
    "measure",
    "profile",
    "to_deploy",
]
