"""Float16 arithmetic as a device computes it, simulated in PyTorch on the CPU.

The artifacts are verified here by x86 runtimes that compute in float32, even when their weights are float16. The
devices do not: Core ML runs ML programs in float16 on the Neural Engine and the GPU, LiteRT's GPU delegate and
NNAPI run float32 files in float16 when precision loss is allowed (their default), XNNPACK's ARMv8.2 float16
kernels keep their accumulators in float16 registers, and WebGPU runs float16 files in float16. This module runs
the converted model (the form the artifact was made from) in two simulated arithmetics:

* ``fp16-storage``: weights, inputs and every tensor between two ops rounded to float16 (round to nearest even,
  overflow to inf); each op computes in float32 from those values. Kernels with float32 accumulators behave so.
* ``fp16-accumulation``: in addition, convolutions and matrix products accumulate in float16, rounding after every
  multiply-add in the order of their reduction axis (XNNPACK's float16 GEMM/IGEMM and depthwise kernels do); means,
  sums, softmax denominators and the statistics of layer norms are sums rounded to float16 at every step of a
  pairwise tree (the order a parallel GPU reduction takes: the most favourable one for float16).

What it does not cover: a device's own order of summation inside a kernel (sequential sums lose more precision than
a tree), fused kernels that keep float32 inside (they fare better than the simulation), transcendental functions'
device approximations (exp, erf, rsqrt are float32 here, rounded), and int8 paths.

The numbers reported per block are the largest magnitude any tensor and any accumulator reached, and the margin to
float16's largest finite value, 65504. See ONNX's LayerNormalization ``stash_type`` and onnxruntime issue #17692 for
the float16 variance overflow this is about.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from fat_deploy.common.verify import Comparison, Tolerance, compare
from fat_deploy.models.blocks import block_names

HALF_MAX = 65504.0  # float16's largest finite value
ROOT = "(model)"  # ops run by the model itself, outside any block
aten = torch.ops.aten


class Arithmetic(StrEnum):
    """A simulated float16 arithmetic (see the module docstring)."""

    STORAGE = "fp16-storage"
    ACCUMULATION = "fp16-accumulation"


def to_half(value: Any) -> Any:
    """A float32 tensor rounded to float16 and back (inf beyond 65504); anything else as it is."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
        return value.half().float()
    return value


def _magnitude(value: Any) -> float:
    tensors = value if isinstance(value, (tuple, list)) else (value,)
    peaks = [float(t.abs().max()) for t in tensors
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    return max(peaks, default=0.0)


def tree_sum(values: torch.Tensor, dims: Sequence[int]) -> tuple[torch.Tensor, float]:
    """Sum over ``dims`` as a pairwise tree in float16 (every partial sum rounded); the sum (dims removed) and the
    largest partial sum's magnitude."""
    rank = values.dim()
    axes = sorted({d % rank for d in dims})
    kept = [d for d in range(rank) if d not in axes]
    flat = values.permute(kept + axes).reshape([values.shape[d] for d in kept] + [-1])
    peak = 0.0
    while flat.shape[-1] > 1:
        if flat.shape[-1] % 2:
            flat = torch.cat([flat, torch.zeros_like(flat[..., :1])], dim=-1)
        flat = to_half(flat[..., 0::2] + flat[..., 1::2])
        peak = max(peak, _magnitude(flat))
    return flat[..., 0], peak


def sequential_dot(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``left @ right`` ((..., M, K) @ (..., K, N)) accumulated in float16 after every multiply-add, in order of K;
    the product and the largest accumulator magnitude."""
    # In place, one multiply-add pass and one rounding pass per step (a fresh tensor per step made this memory-bound
    # and allocation-bound: 2.4-4.4x slower); the extremes are read once at the end, not synchronised per step.
    shape = torch.broadcast_shapes((*left.shape[:-1], 1), (*right.shape[:-2], 1, right.shape[-1]))  # type: ignore[no-untyped-call]
    accumulator = torch.zeros(shape, dtype=torch.promote_types(left.dtype, right.dtype))
    if not accumulator.numel() or not left.shape[-1]:
        return accumulator, 0.0
    rounded = torch.empty(shape, dtype=torch.float16) if accumulator.dtype == torch.float32 else None
    extremes = []
    for k in range(left.shape[-1]):
        torch.addcmul(accumulator, left[..., k:k + 1], right[..., k:k + 1, :], out=accumulator)
        if rounded is not None:  # round to nearest even, inf beyond 65504: what to_half does
            rounded.copy_(accumulator)
            accumulator.copy_(rounded)
        extremes.append(torch.stack(torch.aminmax(accumulator)))
    return accumulator, float(torch.stack(extremes).abs().max())


def _convolution(args: Sequence[Any]) -> tuple[torch.Tensor, float] | None:
    """aten.convolution with float16 accumulation (im2col, then a multiply-add per weight tap); None when
    transposed (not simulated)."""
    x, weight, bias, stride, padding, dilation, transposed, _output_padding, groups = args
    if transposed or x.dim() != 4:
        return None
    batch, out_channels, (kh, kw) = x.shape[0], weight.shape[0], weight.shape[2:]
    columns = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C*kh*kw, L)
    taps = weight.shape[1] * kh * kw
    columns = columns.reshape(batch, groups, taps, columns.shape[-1])
    weights = weight.reshape(groups, out_channels // groups, taps)
    output, peak = sequential_dot(weights.unsqueeze(0), columns)  # (B, groups, O/groups, L)
    if bias is not None:
        output = to_half(output + bias.reshape(1, groups, -1, 1))
    height = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    width = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return output.reshape(batch, out_channels, height, width), peak


def _layer_norm(args: Sequence[Any]) -> tuple[tuple[torch.Tensor, ...], float]:
    x, shape, weight, bias, eps = args
    dims = list(range(x.dim() - len(shape), x.dim()))
    count = math.prod(shape)
    stats_shape = list(x.shape[:x.dim() - len(shape)]) + [1] * len(shape)
    total, peak_mean = tree_sum(x, dims)
    mean = to_half(total / count).reshape(stats_shape)
    centred = to_half(x - mean)
    squares, peak_var = tree_sum(to_half(centred * centred), dims)
    rstd = to_half(torch.rsqrt(to_half(squares / count).reshape(stats_shape) + eps))
    out = to_half(centred * rstd)
    if weight is not None:
        out = to_half(out * weight)
    if bias is not None:
        out = to_half(out + bias)
    return (out, mean, rstd), max(peak_mean, peak_var)


def _mean_or_sum(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[torch.Tensor, float] | None:
    x, dims = args[0], args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
    if not dims or kwargs.get("dtype") is not None:
        return None
    total, peak = tree_sum(x, dims)
    if func is aten.mean.dim:
        total = to_half(total / math.prod(x.shape[d] for d in dims))
    if keepdim:
        axes = {d % x.dim() for d in dims}
        total = total.reshape([1 if d in axes else x.shape[d] for d in range(x.dim())])
    return total, peak


def _softmax(args: Sequence[Any]) -> tuple[torch.Tensor, float]:
    x, dim = args[0], args[1]
    exponentials = to_half(torch.exp(to_half(x - x.amax(dim=dim, keepdim=True))))
    total, peak = tree_sum(exponentials, [dim])
    return to_half(exponentials / total.unsqueeze(dim)), peak


class Float16Arithmetic(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch leaves it untyped
    """Runs every ATen op in the simulated arithmetic, and notes per block the largest tensor, the largest
    accumulator and the first op that overflowed. ``blocks`` is the stack of block names, kept by module hooks."""

    def __init__(self, arithmetic: Arithmetic) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.arithmetic = arithmetic
        self.blocks: list[str] = [ROOT]
        self.peak_values: dict[str, float] = {}
        self.peak_accumulators: dict[str, float] = {}
        self.overflow: str | None = None
        self.float32_ops: set[str] = set()  # ops whose accumulation was left in float32 (named in the report)

    def _accumulate(self, func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Any, float] | None:
        if func is aten.convolution.default:
            return _convolution(args)
        if func is aten.addmm.default:
            product, peak = sequential_dot(args[1], args[2])
            return to_half(product + args[0]), peak
        if func in (aten.mm.default, aten.bmm.default):
            return sequential_dot(args[0], args[1])
        if func is aten.native_layer_norm.default:
            return _layer_norm(args)
        if func in (aten.mean.dim, aten.sum.dim_IntList):
            return _mean_or_sum(func, args, kwargs)
        if func is aten._softmax.default:
            return _softmax(args)
        return None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        block = self.blocks[-1]
        simulated = self._accumulate(func, args, kwargs) if self.arithmetic == Arithmetic.ACCUMULATION else None
        if simulated is None:
            if self.arithmetic == Arithmetic.ACCUMULATION and func in REDUCING_OPS:
                self.float32_ops.add(str(func))
            output, accumulator = tree_map(to_half, func(*args, **kwargs)), 0.0
        else:
            output, accumulator = simulated
        value = _magnitude(output)
        self.peak_values[block] = max(self.peak_values.get(block, 0.0), value)
        self.peak_accumulators[block] = max(self.peak_accumulators.get(block, 0.0), accumulator)
        if self.overflow is None and (not math.isfinite(value) or not math.isfinite(accumulator)
                                      or max(value, accumulator) > HALF_MAX):
            self.overflow = f"{block} ({func})"
        return output


REDUCING_OPS = frozenset({aten.convolution.default, aten.addmm.default, aten.mm.default, aten.bmm.default,
                          aten.native_layer_norm.default, aten.mean.dim, aten.sum.dim_IntList, aten._softmax.default,
                          aten.native_group_norm.default, aten.var.correction})


@dataclass
class BlockRange:
    """One block's largest tensor and accumulator magnitudes, and the margin to 65504 (``HALF_MAX / peak``)."""

    block: str
    peak_value: float
    peak_accumulator: float

    @property
    def margin(self) -> float:
        peak = max(self.peak_value, self.peak_accumulator)
        return HALF_MAX / peak if peak > 0 else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {"block": self.block, "peak_value": _rounded(self.peak_value),
                "peak_accumulator": _rounded(self.peak_accumulator), "margin_to_65504": _rounded(self.margin)}


def _rounded(value: float) -> float | str:
    return value if not math.isfinite(value) else float(f"{value:.4g}")


@dataclass
class ArithmeticResult:
    """The model in one simulated arithmetic against the float32 model."""

    arithmetic: Arithmetic
    comparison: Comparison
    blocks: list[BlockRange]
    overflow: str | None  # the first block (and op) where a tensor or an accumulator left float16's range
    float32_ops: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        found = [f"{self.arithmetic}: overflow beyond 65504 in {self.overflow}"] if self.overflow else []
        return found + [f"{self.arithmetic}: {failure}" for failure in self.comparison.failures]

    @property
    def tightest(self) -> BlockRange | None:
        return min(self.blocks, key=lambda row: row.margin, default=None)

    def as_dict(self) -> dict[str, Any]:
        tightest = self.tightest
        return {"arithmetic": str(self.arithmetic), "overflow": self.overflow,
                "tightest_block": tightest.as_dict() if tightest else None,
                "blocks": [row.as_dict() for row in self.blocks], "comparison": self.comparison.as_dict(),
                "accumulated_in_float32": self.float32_ops, "passed": not self.failures}


@dataclass
class Float16Check:
    """Both simulated arithmetics, and what they fail (empty when the model holds in float16)."""

    results: list[ArithmeticResult]
    inputs: int

    @property
    def failures(self) -> list[str]:
        return [failure for result in self.results for failure in result.failures]

    def summary_line(self) -> str:
        """One line: per arithmetic, the tightest block's margin to 65504 (or where it overflowed) and the drift."""
        parts = []
        for result in self.results:
            tightest = result.tightest
            where = (f"OVERFLOW in {result.overflow}" if result.overflow else
                     f"margin {tightest.margin:.3g}x ({tightest.block})" if tightest else "no blocks")
            parts.append(f"{result.arithmetic.value.removeprefix('fp16-')} {where}, drift "
                         f"{result.comparison.max_abs_rel:.1e}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"simulated_in": f"torch {torch.__version__} on CPU (see fat_deploy.common.fp16)", "inputs": self.inputs,
                "results": [result.as_dict() for result in self.results], "passed": not self.failures}


def _simulate(model: nn.Module, inputs: torch.Tensor, arithmetic: Arithmetic) -> tuple[np.ndarray, Float16Arithmetic]:
    mode = Float16Arithmetic(arithmetic)
    handles = []
    for name, module in block_names(model).items():
        def enter(_module: nn.Module, _inputs: Any, name: str = name) -> None:
            mode.blocks.append(name)

        def leave(_module: nn.Module, _inputs: Any, _output: Any) -> None:
            mode.blocks.pop()

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        with torch.no_grad(), mode:
            outputs = model(to_half(inputs))
    finally:
        for handle in handles:
            handle.remove()
    return outputs.float().numpy(), mode


def check_fp16(model: nn.Module, inputs: np.ndarray, tolerance: Tolerance,
               arithmetics: Sequence[Arithmetic] = tuple(Arithmetic), accumulation_inputs: int = 2,
               reference: Callable[[np.ndarray], np.ndarray] | None = None) -> Float16Check:
    """``model`` (float32, eval) with float16 weights, run in each simulated arithmetic on ``inputs`` and compared with
    ``reference`` (default: the float32 model itself) under ``tolerance``. The float16-accumulation simulation,
    a multiply-add at a time, runs on the first ``accumulation_inputs`` inputs only (about 0.4 s per FAT-B0 image at
    224 px on two cores)."""
    half_weights = copy.deepcopy(model).eval()
    with torch.no_grad():
        for tensor in [*half_weights.parameters(), *half_weights.buffers()]:
            if tensor.dtype == torch.float32:
                tensor.copy_(to_half(tensor))
    run_reference = reference or (lambda x: _float32(model, x))
    results = []
    for arithmetic in arithmetics:
        batch = inputs if arithmetic == Arithmetic.STORAGE else inputs[:accumulation_inputs]
        outputs, mode = _simulate(half_weights, torch.from_numpy(batch), arithmetic)
        rows = [BlockRange(block, mode.peak_values[block], mode.peak_accumulators.get(block, 0.0))
                for block in mode.peak_values]
        results.append(ArithmeticResult(arithmetic, compare(run_reference(batch), outputs, tolerance), rows,
                                        mode.overflow, sorted(mode.float32_ops)))
    return Float16Check(results, len(inputs))


def _float32(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        result: np.ndarray = model(torch.from_numpy(inputs)).numpy()
    return result
