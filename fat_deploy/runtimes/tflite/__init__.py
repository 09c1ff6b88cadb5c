"""TFLite: litert-torch conversion, ai-edge-quantizer modes, the LiteRT interpreter (XNNPACK)."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.tflite.converter import TFLiteFormat

RUNTIME = Runtime(backend=TFLiteFormat.backend, export_format=TFLiteFormat(),
                  packages=("litert-torch", "ai-edge-litert", "ai-edge-quantizer"))
