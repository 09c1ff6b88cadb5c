"""ncnn's adapter for a process of its own (fat_deploy.common.probe), and the settings and file names every ncnn
load here uses (the session imports them from here). Imports numpy, and ncnn only when loading."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import Any

import numpy as np

RUNTIME = "ncnn"
PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"  # the pair inside an artifact folder
INPUT_NAME, OUTPUT_NAME = "in0", "out0"  # as pnnx names a one-input, one-output model's blobs


def configure(net: Any, threads: int) -> None:
    """fp32 storage and arithmetic (ncnn's defaults turn fp16 on where the CPU has it), CPU only, ``threads``."""
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.num_threads = threads


def input_shape(folder: Path) -> list[int] | None:
    """[C, H, W] from the param file's Input layer (fat-export writes it there), or None."""
    for line in (folder / PARAM).read_text(encoding="utf-8").splitlines()[2:]:
        fields = line.split()
        if fields and fields[0] == "Input":
            first_param = 4 + int(fields[2]) + int(fields[3])  # type, name, counts, then bottoms and tops
            params = dict(field.split("=", 1) for field in fields[first_param:] if "=" in field)
            if {"0", "1", "2"} <= set(params):
                return [int(params["2"]), int(params["1"]), int(params["0"])]
            return None
    return None


def open_net(folder: Path, threads: int) -> Any:
    """The param/bin pair in ``folder`` loaded with :func:`configure`'s settings."""
    import ncnn

    net = ncnn.Net()
    configure(net, threads)
    if net.load_param(str(folder / PARAM)) != 0 or net.load_model(str(folder / BIN)) != 0:
        raise RuntimeError(f"ncnn cannot load {folder}")
    return net


def every_blob(folder: Path, image: np.ndarray) -> list[np.ndarray]:
    """Every blob ncnn computes for one CHW or NCHW float32 image (one extractor keeps them all: light mode off)."""
    import ncnn

    net = open_net(folder, 1)
    extractor = net.create_extractor()
    extractor.set_light_mode(False)
    extractor.input(INPUT_NAME, ncnn.Mat(np.ascontiguousarray(image.reshape(image.shape[-3:]), np.float32)).clone())
    blobs = []
    for blob in net.blobs():
        status, mat = extractor.extract(blob.name)
        if status == 0:
            blobs.append(np.array(mat, dtype=np.float32))
    return blobs


def version() -> str:
    return distribution_version(RUNTIME)


def import_runtime() -> None:
    import ncnn  # noqa: F401


def load(artifact: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import ncnn

    net = open_net(Path(artifact), threads)

    def run(batch: np.ndarray) -> np.ndarray:
        outputs = []
        for image in np.ascontiguousarray(batch, dtype=np.float32):
            extractor = net.create_extractor()
            extractor.input(INPUT_NAME, ncnn.Mat(image).clone())
            _, output = extractor.extract(OUTPUT_NAME)
            outputs.append(np.array(output, dtype=np.float32).reshape(-1))
        return np.stack(outputs)

    run.batch = 1  # type: ignore[attr-defined]
    run.net = net  # type: ignore[attr-defined]
    return run
