"""Float conversions reused within one run: the graph every precision and search step of a model starts from.

A TFLite or ONNX int8 file is the float file quantized, an ExecuTorch int8 program is timed against the float
program, and the accuracy search re-quantizes the same float model with more layers kept float. Inside
:func:`reusing_conversions` (one ``export()`` call with its search steps, or one ``fat-export`` run whose exports share
a process) a runtime builds such a float result once, under a key made of the model's content
(:func:`model_fingerprint`) and whatever else shapes the graph; the next precision or step takes a copy. Outside
it nothing is kept: every conversion runs afresh. Every file is still verified against PyTorch, so a reused float
graph is checked like a new one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
import torch.nn as nn

T = TypeVar("T")

KEPT_RESULTS = 4  # a bounded memo: a float FAT-B2 file is about 55 MB
_MEMO: ContextVar[OrderedDict[str, Any] | None] = ContextVar("fat_deploy_reused_conversions", default=None)

_PLAIN = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device)


@contextmanager
def reusing_conversions() -> Iterator[None]:
    """Within this block (nested blocks share the outermost one), :func:`reused` keeps what it builds."""
    if _MEMO.get() is not None:
        yield
        return
    token = _MEMO.set(OrderedDict())
    try:
        yield
    finally:
        _MEMO.reset(token)


def reused(key: str | None, build: Callable[[], T]) -> T:
    """``build()``, or a copy of what it returned for ``key`` earlier in the same :func:`reusing_conversions` block.
    A ``None`` key (a model whose content cannot be fingerprinted) always builds."""
    memo = _MEMO.get()
    if memo is None or key is None:
        return build()
    if key not in memo:
        memo[key] = build()
        while len(memo) > KEPT_RESULTS:
            memo.popitem(last=False)
    memo.move_to_end(key)
    kept: T = copy.deepcopy(memo[key])
    return kept


def reuse_key(converter: str, model: nn.Module, example: torch.Tensor, *settings: object) -> str | None:
    """The key of ``model``'s conversion by ``converter`` at ``example``'s shape with ``settings``; ``None`` (build
    afresh) for a model :func:`model_fingerprint` cannot tell apart."""
    fingerprint = model_fingerprint(model)
    if fingerprint is None:
        return None
    return f"{converter}:{fingerprint}:{tuple(example.shape)}:{settings!r}"


def model_fingerprint(model: nn.Module) -> str | None:
    """A digest of everything a module's forward can depend on: each submodule's class and plain attributes, every
    parameter, buffer and tensor attribute's dtype, shape and bytes. ``None`` where that cannot be told: a module
    with hooks, or an attribute that is neither plain data nor a tensor (its effect on forward is unknown)."""
    digest = hashlib.blake2b(digest_size=20)
    for name, module in model.named_modules(remove_duplicate=False):
        if any(getattr(module, hooks, None) for hooks in ("_forward_hooks", "_forward_pre_hooks")):
            return None
        digest.update(f"<{name}:{type(module).__module__}.{type(module).__qualname__}>".encode())
        tensors = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
        for key, value in sorted(vars(module).items()):
            if key.startswith("_") or isinstance(value, nn.Module):
                continue
            if isinstance(value, torch.Tensor):
                tensors[key] = value
            elif _is_plain(value):
                digest.update(f"{key}={value!r};".encode())
            else:
                return None
        for key, tensor in sorted(tensors.items()):
            data = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list, frozenset, set)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(_is_plain(key) and _is_plain(item) for key, item in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a model's configuration: its repr has it all
        return all(_is_plain(getattr(value, item.name)) for item in dataclasses.fields(value))
    return False
