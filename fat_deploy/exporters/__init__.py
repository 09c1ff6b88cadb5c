"""The export pipeline: resolve the model, convert (through a runtime package), verify, place, write the manifest."""

from fat_deploy.contract.formats import PRECISIONS
from fat_deploy.exporters.api import Artifact, export
from fat_deploy.registry import formats, get_format, list_formats

__all__ = ["PRECISIONS", "Artifact", "export", "formats", "get_format", "list_formats"]
