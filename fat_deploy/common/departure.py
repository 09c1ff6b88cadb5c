"""Where a file departs from PyTorch: the first block whose output the runtime does not reproduce.

Every intermediate tensor the runtime computed for one image (ONNX: every node output through onnxruntime with graph
optimisations off; LiteRT: every tensor kept, reference kernels) is matched by value to each block's output in the
PyTorch deploy form, which computes the same block outputs as the file: a block's error is the smallest max relative
difference among the file's tensors of its size (NCHW, or NHWC transposed). Blocks come in execution order
(:func:`fat_deploy.models.blocks.block_names`; a stage after its blocks); the first whose error exceeds the tolerance
is where the file departs. A block with no tensor of its size in the file (fused away) is reported as unmatched, not
as departed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.models.blocks import block_names


@dataclass(frozen=True)
class BlockError:
    """One block: its output shape and the file's closest tensor's max relative difference (None: no candidate)."""

    block: str
    shape: tuple[int, ...]
    max_abs_rel: float | None


@dataclass(frozen=True)
class Departure:
    """Each block's error in execution order, the tolerance, and the first block beyond it (None: the file holds)."""

    blocks: list[BlockError]
    tolerance: float
    tensors: int  # how many tensors the runtime showed

    @property
    def first(self) -> BlockError | None:
        return next((row for row in self.blocks if row.max_abs_rel is not None and row.max_abs_rel > self.tolerance),
                    None)

    def line(self) -> str:
        first = self.first
        matched = sum(1 for row in self.blocks if row.max_abs_rel is not None)
        if first is None:
            return f"every block within {self.tolerance:.0e} ({matched} of {len(self.blocks)} blocks matched)"
        before = self.blocks[:self.blocks.index(first)]
        return (f"departs from PyTorch first at {first.block} (max relative diff {first.max_abs_rel:.2e} > "
                f"{self.tolerance:.0e}; the {sum(1 for row in before if row.max_abs_rel is not None)} blocks "
                "before it within)")

    def as_dict(self) -> dict[str, Any]:
        first = self.first
        return {"first_departing_block": first.block if first else None, "tolerance": self.tolerance,
                "tensors_compared": self.tensors,
                "blocks": [{"block": row.block, "shape": list(row.shape),
                            "max_abs_rel": None if row.max_abs_rel is None else float(f"{row.max_abs_rel:.3g}")}
                           for row in self.blocks]}


def block_outputs(model: nn.Module, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Each block's output for ``image`` (1, C, H, W), in the order they are computed (a stage after its blocks,
    so that the first departing block is the innermost one)."""
    outputs: dict[str, np.ndarray] = {}
    handles = []
    for name, module in block_names(model).items():
        def leave(_module: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
            if isinstance(output, torch.Tensor) and name not in outputs:
                outputs[name] = output.detach().float().numpy().copy()

        handles.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad():
            model(torch.from_numpy(image))
    finally:
        for handle in handles:
            handle.remove()
    return list(outputs.items())


def _layouts(tensor: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """``tensor`` read as ``shape``: as laid out, and, for a 4-d shape, from NHWC."""
    found = [tensor.reshape(shape)]
    if len(shape) == 4:
        batch, channels, height, width = shape
        found.append(tensor.reshape(batch, height, width, channels).transpose(0, 3, 1, 2))
    return found


def locate_departure(model: nn.Module, image: np.ndarray, tensors: Sequence[np.ndarray], tolerance: float) -> Departure:
    """Match ``tensors`` (the runtime's, for ``image``) to ``model``'s block outputs; see the module docstring."""
    by_size: dict[int, list[np.ndarray]] = {}
    for tensor in tensors:
        by_size.setdefault(tensor.size, []).append(np.asarray(tensor, dtype=np.float32))
    rows = []
    for name, reference in block_outputs(model, image):
        scale = float(np.abs(reference).max()) or 1.0
        errors = [float(np.abs(candidate - reference).max()) / scale
                  for tensor in by_size.get(reference.size, []) for candidate in _layouts(tensor, reference.shape)]
        rows.append(BlockError(name, tuple(reference.shape), min(errors) if errors else None))
    return Departure(rows, tolerance, len(tensors))
