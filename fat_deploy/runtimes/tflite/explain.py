"""``--explain`` for quantized .tflite files: tensors of the float and the quantized graph, compared layer by layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fat_deploy.common.explain import LayerError, LayerIO, rank_layers, tensor_sqnr
from fat_deploy.runtimes.tflite.tensors import from_output_dtype, to_input_dtype

TFLITE_LAYER_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"})


def _tflite_activations(path: Path, inputs: np.ndarray,
                        wanted: set[str] | None = None) -> tuple[dict[str, list[np.ndarray]], list[LayerIO]]:
    """The inputs and outputs of the file's quantized layers (or the ``wanted`` tensors), per image; the layers."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    # Activations: the graph's input and what ops compute (weights and biases are constants, compared by no one).
    activations = {i for op in ops for i in op["outputs"]} | {d["index"] for d in interpreter.get_input_details()}
    layers = [
        LayerIO(tensors[op["outputs"][0]]["name"], op["op_name"],
                tuple(tensors[i]["name"] for i in op["inputs"] if i in activations), tensors[op["outputs"][0]]["name"])
        for op in ops
        if op["op_name"] in TFLITE_LAYER_OPS and len(op["outputs"])
        and any(tensors[i]["dtype"] in (np.int8, np.uint8) for i in (*op["inputs"], *op["outputs"]) if i >= 0)
    ]  # quantized layers only: one the recipe kept float is no candidate for --keep-float
    if wanted is None:
        wanted = {layer.output for layer in layers} | {i for layer in layers for i in layer.inputs}
    (source,) = interpreter.get_input_details()
    collected: dict[str, list[np.ndarray]] = {}
    for sample in inputs:
        interpreter.set_tensor(source["index"], to_input_dtype(np.ascontiguousarray(sample[None]), source))
        interpreter.invoke()
        for index, detail in tensors.items():
            if detail["name"] not in wanted:
                continue
            try:
                value = interpreter.get_tensor(index)
            except ValueError:  # constant or freed tensor
                continue
            as_float = from_output_dtype(value, detail) if value.dtype.kind in "iu" and detail["quantization"][0] else value
            collected.setdefault(detail["name"], []).append(np.array(as_float, dtype=np.float32))
    return collected, layers


def every_tensor(path: Path, image: np.ndarray) -> list[np.ndarray]:
    """Every tensor of the .tflite at ``path`` for one NCHW image (fed as NHWC where the file takes NHWC), as float32
    (quantized ones dequantized). Kept tensors need LiteRT's built-in kernels: XNNPACK does not keep its own."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    batch = image[None] if image.ndim == 3 else image
    if list(source["shape"]) != list(batch.shape) and source["shape"][-1] == batch.shape[1]:
        batch = batch.transpose(0, 2, 3, 1)
    interpreter.set_tensor(source["index"], to_input_dtype(np.ascontiguousarray(batch), source))
    interpreter.invoke()
    found = []
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:  # freed or constant
            continue
        if value.dtype.kind == "f":
            found.append(np.array(value, dtype=np.float32))
        elif value.dtype.kind in "iu" and detail["quantization"][0]:
            found.append(np.array(from_output_dtype(value, detail), dtype=np.float32))
    return found


def explain_tflite(float_path: Path, quant_path: Path, inputs: np.ndarray) -> list[LayerError]:
    """Per-layer error of a quantized .tflite against the float .tflite it came from (same tensor names); the layers
    ranked are the quantized file's quantized ones."""
    quant_acts, layers = _tflite_activations(quant_path, inputs)
    float_acts, _ = _tflite_activations(float_path, inputs, wanted=set(quant_acts))
    return rank_layers(layers, tensor_sqnr(float_acts, quant_acts))
