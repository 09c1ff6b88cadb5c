"""ORT Mobile: the ONNX export converted to ONNX Runtime's ``.ort`` format, with its reduced-build operator list."""

from fat_deploy.runtimes.base import Runtime
from fat_deploy.runtimes.ort_mobile.converter import OrtMobileFormat
from fat_deploy.runtimes.ort_mobile.session import OrtFormatBackend

RUNTIME = Runtime(backend=OrtFormatBackend(), export_format=OrtMobileFormat(), packages=("onnxruntime",))
