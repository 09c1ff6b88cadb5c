"""``--explain``: which layers a quantization pass hurts most, measured on held-out images.

Both models (float and quantized) run on the same images with every intermediate tensor kept. For each
quantizable layer (convolutions, linear layers, matmuls) we know the error of its output against the float
model (SQNR, cumulative: it includes everything upstream) and of its inputs. The error a layer *adds* is the
growth of the noise-to-signal ratio from its worst input to its output; layers are ranked by it. The layer
names are the graph's node names (module paths for ONNX), so they can be passed to ``--keep-float``.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ONNX_LAYER_OPS = frozenset({"Conv", "Gemm", "MatMul", "ConvTranspose"})
TFLITE_LAYER_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"})
SHOWN_BY_DEFAULT = 10
EXPLAIN_IMAGES = 4
EXPLAIN_METHOD = ("per-layer SQNR of the quantized model's activations against the float model's on held-out "
                  "images; 'added' = growth of noise-to-signal from the layer's worst input to its output")


@dataclass(frozen=True)
class LayerIO:
    """One layer of a graph: its name, op type, activation inputs and output tensor."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class LayerError:
    name: str
    op_type: str
    sqnr_db: float  # output vs float model, cumulative
    input_sqnr_db: float  # worst input vs float model (inf for the graph input)
    added_db: float  # the noise this layer adds, as an SQNR (lower = worse); inf if none

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isinf(v) else round(v, 2) if isinstance(v, float) else v)
                for k, v in asdict(self).items()}


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """10 log10(signal / noise) of ``other`` against ``reference`` (inf when equal)."""
    reference = reference.astype(np.float64)
    noise = float(np.sum((reference - other.astype(np.float64)) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _nsr(db: float) -> float:
    return 0.0 if math.isinf(db) and db > 0 else 10 ** (-db / 10)


def rank_layers(layers: Iterable[LayerIO], sqnr: Mapping[str, float]) -> list[LayerError]:
    """Layers whose output was measured, worst (most added noise) first. Pure function."""
    ranked = []
    for layer in layers:
        if layer.output not in sqnr:
            continue
        measured_inputs = [sqnr[t] for t in layer.inputs if t in sqnr]
        input_db = min(measured_inputs) if measured_inputs else math.inf
        added = max(_nsr(sqnr[layer.output]) - _nsr(input_db), 0.0)
        added_db = -10 * math.log10(added) if added > 0 else math.inf
        ranked.append(LayerError(layer.name, layer.op_type, sqnr[layer.output], input_db, added_db))
    return sorted(ranked, key=lambda e: e.added_db)


def _tensor_sqnr(float_acts: Mapping[str, list[np.ndarray]], quant_acts: Mapping[str, list[np.ndarray]]) -> dict[str, float]:
    result = {}
    for name, values in float_acts.items():
        other = quant_acts.get(name)
        if other is None or len(other) != len(values) or values[0].dtype.kind != "f":
            continue
        if any(a.shape != b.shape for a, b in zip(values, other)):
            continue
        result[name] = sqnr_db(np.concatenate([v.ravel() for v in values]),
                               np.concatenate([o.ravel().astype(np.float32) for o in other]))
    return result


def explain_inputs(request: Any, calibrated_on: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """A few held-out images (never the calibration ones), preprocessed like inference."""
    from fat_deploy.exporters.calibration import held_out_inputs

    inputs, names = held_out_inputs(request.spec, request.img_size, list(calibrated_on))
    order = sorted(range(len(names)), key=lambda i: (":" in names[i], i))  # whole photos before crops
    chosen = order[:EXPLAIN_IMAGES]
    return inputs[chosen], [names[i] for i in chosen]


# ---------------------------------------------------------------- ONNX


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
    return rank_layers(layers, _tensor_sqnr(float_acts, quant_acts))


# ---------------------------------------------------------------- TFLite


def _tflite_activations(path: Path, inputs: np.ndarray) -> tuple[dict[str, list[np.ndarray]], list[LayerIO]]:
    from ai_edge_litert.interpreter import Interpreter

    from fat_deploy.exporters.tflite import from_output_dtype, to_input_dtype

    interpreter = Interpreter(str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    layers = [
        LayerIO(tensors[op["outputs"][0]]["name"], op["op_name"],
                tuple(tensors[i]["name"] for i in op["inputs"] if i >= 0), tensors[op["outputs"][0]]["name"])
        for op in interpreter._get_ops_details()
        if op["op_name"] in TFLITE_LAYER_OPS and len(op["outputs"])
    ]
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


def explain_tflite(float_path: Path, quant_path: Path, inputs: np.ndarray) -> list[LayerError]:
    """Per-layer error of a quantized .tflite against the float .tflite it came from (same tensor names)."""
    float_acts, _ = _tflite_activations(float_path, inputs)
    quant_acts, layers = _tflite_activations(quant_path, inputs)
    return rank_layers(layers, _tensor_sqnr(float_acts, quant_acts))


def report(errors: Sequence[LayerError], limit: int = SHOWN_BY_DEFAULT) -> list[dict[str, Any]]:
    """The worst ``limit`` layers, as manifest-ready dicts."""
    return [error.as_dict() for error in errors[:limit]]
