"""``--explain``: which layers a quantization pass hurts most, measured on held-out images.

Both models (float and quantized) run on the same images with every intermediate tensor kept. For each
quantizable layer (convolutions, linear layers, matmuls) we know the error of its output against the float
model (SQNR, cumulative: it includes everything upstream) and of its inputs. The error a layer *adds* is the
growth of the noise-to-signal ratio from its worst input to its output; layers are ranked by it. The layer
names are the graph's node names (module paths for ONNX), so they can be passed to ``--keep-float``.
Each runtime package collects its own activations (``runtimes/<name>/explain.py``); ranking lives here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fat_deploy.common.calibration import held_out_inputs

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


def tensor_sqnr(float_acts: Mapping[str, list[np.ndarray]], quant_acts: Mapping[str, list[np.ndarray]]) -> dict[str, float]:
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

    inputs, names = held_out_inputs(request.spec, request.img_size, list(calibrated_on))
    order = sorted(range(len(names)), key=lambda i: (":" in names[i], i))  # whole photos before crops
    chosen = order[:EXPLAIN_IMAGES]
    return inputs[chosen], [names[i] for i in chosen]


def report(errors: Sequence[LayerError], limit: int = SHOWN_BY_DEFAULT) -> list[dict[str, Any]]:
    """The worst ``limit`` layers, as manifest-ready dicts."""
    return [error.as_dict() for error in errors[:limit]]
