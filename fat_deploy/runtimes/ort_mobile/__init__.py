"""ORT Mobile: the ONNX export converted to ONNX Runtime's ``.ort`` format, with its reduced-build operator list."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.ort_mobile.converter import OrtMobileFormat

RUNTIME = Runtime(backend=OrtMobileFormat.backend, export_format=OrtMobileFormat(), packages=("onnxruntime",))
