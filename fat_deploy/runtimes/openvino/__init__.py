"""OpenVINO: IR through openvino.convert_model, int8 through NNCF, run by the CPU plugin in f32 arithmetic."""

from fat_deploy.contract.runtime import Runtime
from fat_deploy.runtimes.openvino.converter import OpenVinoFormat

RUNTIME = Runtime(backend=OpenVinoFormat.backend, export_format=OpenVinoFormat(), packages=("openvino", "nncf"))
