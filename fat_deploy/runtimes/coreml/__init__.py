"""Core ML: coremltools conversion and compression, spec checks on any OS, prediction on macOS."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.coreml.converter import CoreMLFormat

RUNTIME = Runtime(backend=CoreMLFormat.backend, export_format=CoreMLFormat(), packages=("coremltools",))
