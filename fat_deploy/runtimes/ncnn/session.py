"""ncnn (https://github.com/Tencent/ncnn) on this host's CPU: fp32 storage and arithmetic asked for explicitly (ncnn
turns fp16 storage and arithmetic on by default where a CPU has them: ARMv8.2 phones, x86 with AVX512-FP16 or F16C
storage), Vulkan off, the timed thread count. ncnn runs one image per extraction: a batch is a loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fat_deploy.contract.session import Backend, BackendError, LoadRequest, Runner
from fat_deploy.runtimes.ncnn.standalone import BIN, INPUT_NAME, OUTPUT_NAME, PARAM, configure, input_shape


class NcnnRunner(Runner):
    def __init__(self, net: Any) -> None:
        self.net = net

    def prepare(self, batch: np.ndarray) -> list[Any]:
        import ncnn

        return [ncnn.Mat(np.ascontiguousarray(image, dtype=np.float32)).clone() for image in batch]

    def run(self, prepared: Any) -> Any:
        outputs = []
        for mat in prepared:
            extractor = self.net.create_extractor()
            extractor.input(INPUT_NAME, mat)
            outputs.append(extractor.extract(OUTPUT_NAME)[1])
        return outputs

    def logits(self, prepared: Any) -> np.ndarray:
        return np.stack([np.array(out, dtype=np.float32).reshape(-1) for out in self.run(prepared)])


class NcnnBackend(Backend):
    name = "ncnn"
    package = "ncnn"
    artifact_format = "ncnn"
    devices = ("cpu",)
    device_notes = {"cuda": "cuda: ncnn's GPU path is Vulkan (phones, desktops with a Vulkan driver); not run here"}
    module, extra = "ncnn", "ncnn"
    standalone_adapter = Path(__file__).with_name("standalone.py")

    def load(self, request: LoadRequest) -> Runner:
        import ncnn

        assert request.artifact is not None
        folder = Path(request.artifact)
        net = ncnn.Net()
        configure(net, request.threads)
        if not (folder / PARAM).is_file() or net.load_param(str(folder / PARAM)) != 0 \
                or net.load_model(str(folder / BIN)) != 0:
            raise BackendError(f"ncnn cannot load {folder}: it needs {PARAM} and {BIN} as fat-export writes them")
        shape, expected = input_shape(folder), [3, *request.img_size]
        if request.batch != 1 or shape != expected:  # ncnn would run any size and time another model than recorded
            raise BackendError(f"artifact {folder.name} takes input {[1, *shape] if shape else 'of no recorded size'}, "
                               f"not {[request.batch, *expected]}; re-export it or change --batch/--img-size")
        return NcnnRunner(net)
