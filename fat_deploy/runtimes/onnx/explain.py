"""``--explain`` for onnxruntime-quantized models: every intermediate tensor of both graphs, compared layer by layer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from fat_deploy.common.explain import LayerError, LayerIO, rank_layers, tensor_sqnr

ONNX_LAYER_OPS = frozenset({"Conv", "Gemm", "MatMul", "ConvTranspose"})


def _onnx_activations(model_path: Path, inputs: np.ndarray, input_name: str, folder: Path) -> dict[str, list[np.ndarray]]:
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    augmented = folder / f"{model_path.stem}.all-outputs.onnx"
    modify_model_output_intermediate_tensors(model_path, augmented)
    session = ort.InferenceSession(str(augmented), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for sample in inputs:
        for name, value in zip(names, session.run(None, {input_name: sample[None]})):
            collected[name].append(np.asarray(value))
    return collected


def every_tensor(path: Path, image: np.ndarray) -> list[np.ndarray]:
    """Every node output of the ONNX file at ``path`` for one image, as float32 (integer tensors left out)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    input_name = next(value.name for value in graph.input if value.name not in initializers)
    with tempfile.TemporaryDirectory() as folder:
        collected = _onnx_activations(path, image[None] if image.ndim == 3 else image, input_name, Path(folder))
    return [np.asarray(values[0], dtype=np.float32) for values in collected.values()
            if values and values[0].dtype.kind == "f"]


def explain_onnx(float_path: Path, quant_path: Path, inputs: np.ndarray, input_name: str) -> list[LayerError]:
    """Per-layer error of an onnxruntime-quantized model against the float model it came from."""
    import onnx

    graph = onnx.load(str(float_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    layers = [
        LayerIO(node.name, node.op_type, tuple(i for i in node.input if i and i not in initializers), node.output[0])
        for node in graph.node
        if node.op_type in ONNX_LAYER_OPS
    ]
    with tempfile.TemporaryDirectory() as folder:
        float_acts = _onnx_activations(float_path, inputs, input_name, Path(folder))
        quant_acts = _onnx_activations(quant_path, inputs, input_name, Path(folder))
    return rank_layers(layers, tensor_sqnr(float_acts, quant_acts))
