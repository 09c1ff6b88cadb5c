"""onnxruntime running ``.ort`` files (what an ORT Mobile app loads), on this host's CPU."""

from __future__ import annotations

from fat_deploy.runtimes.onnx.session import OnnxRuntimeBackend


class OrtFormatBackend(OnnxRuntimeBackend):
    name = "onnxruntime-ort"
    artifact_format = "ort"
    devices = ("cpu",)
    device_notes = {"cuda": "cuda: .ort files are for ORT Mobile's CPU, NNAPI and Core ML providers"}
