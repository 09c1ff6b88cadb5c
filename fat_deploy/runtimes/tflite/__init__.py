"""TFLite: litert-torch conversion, ai-edge-quantizer modes, the LiteRT interpreter (XNNPACK)."""

from fat_deploy.runtimes.base import Runtime
from fat_deploy.runtimes.tflite.converter import TFLiteFormat
from fat_deploy.runtimes.tflite.session import TFLiteBackend

RUNTIME = Runtime(backend=TFLiteBackend(), export_format=TFLiteFormat(),
                  packages=("litert-torch", "ai-edge-litert", "ai-edge-quantizer"))
