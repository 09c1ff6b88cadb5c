"""Core ML: coremltools conversion and compression, spec checks on any OS, prediction on macOS."""

from fat_deploy.runtimes.base import Runtime
from fat_deploy.runtimes.coreml.converter import CoreMLFormat
from fat_deploy.runtimes.coreml.session import CoreMLBackend

RUNTIME = Runtime(backend=CoreMLBackend(), export_format=CoreMLFormat(), packages=("coremltools",))
