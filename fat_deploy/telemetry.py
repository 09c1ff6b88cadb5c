"""No usage telemetry from the runtimes fat-deploy drives: imported first by the package, so it applies to every
fat-deploy process and the processes it starts.

onnxruntime (1.29 on) uploads usage events from Linux and macOS too, and keeps a device id and an event cache under
``~/.cache/Microsoft/DeveloperTools/.onnxruntime``, unless ``ORT_DISABLE_TELEMETRY=1`` is set before it initialises
(https://github.com/microsoft/onnxruntime/pull/27379, #29843). It is set here unless the user set it. OpenVINO's
converter and NNCF are kept quiet where openvino is imported (``fat_deploy.runtimes.openvino.standalone``); MNN's
telemetry-sending Python converter wrapper is never used (``fat_deploy.runtimes.mnn``).
"""

from __future__ import annotations

import os

ONNXRUNTIME_OPT_OUT = "ORT_DISABLE_TELEMETRY"

os.environ.setdefault(ONNXRUNTIME_OPT_OUT, "1")
