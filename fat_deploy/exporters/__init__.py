"""Exporters: one module per format behind a registry, verification and manifests."""

from fat_deploy.exporters.api import Artifact, export
from fat_deploy.exporters.registry import FORMATS, PRECISIONS, get_format, list_formats

__all__ = ["FORMATS", "PRECISIONS", "Artifact", "export", "get_format", "list_formats"]
