"""Safe loading of untrusted checkpoints: official training files, bare state_dicts, safetensors.

Nothing in a checkpoint is executed. ``torch.load(weights_only=True)`` is tried first. The official
training script also pickles a yacs ``CfgNode`` (``ckpt['config']``), which torch's weights-only
unpickler cannot rebuild; for such files a restricted unpickler takes over. It resolves only
torch's own weights-only allow-list plus a short list of known *inert* config types, which become
opaque placeholders (never the real class, never constructed); any other reference (``os.system``,
``builtins.eval``, ...) refuses the file.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fat_deploy.errors import CheckpointError
from fat_deploy.models.spec import ModelSpec

StateDict = dict[str, torch.Tensor]

# Config objects seen in training checkpoints. They are replaced by an inert dict placeholder.
INERT_GLOBALS = frozenset(
    {
        "yacs.config.CfgNode",  # official FAT training script: ckpt['config']
        "argparse.Namespace",  # DeiT/timm-style scripts: ckpt['args']
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.ndarray",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
    }
)
_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "ema", "model", "state_dict", "module", "net")
_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.")
_CONVERT_HINT = (
    "convert it where you trust it: torch.save(ckpt['model'], 'weights.pth'), "
    "or save it as .safetensors"
)


class OpaqueObject(dict):  # type: ignore[type-arg]
    """Placeholder for an allow-listed non-tensor object; keeps dict items, runs nothing."""

    pickled_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D107 - ignores its arguments
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint refers to code that fat-deploy will not load."""


def _allowed_torch_globals() -> dict[str, Any]:
    from torch import _weights_only_unpickler as wo

    return dict(wo._get_allowed_globals())


def _restricted_pickle_module() -> types.ModuleType:
    allowed = _allowed_torch_globals()
    placeholders: dict[str, type] = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names (protocol 2)
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            full_name = f"{module}.{name}"
            if full_name in allowed:
                return allowed[full_name]
            if full_name in INERT_GLOBALS:
                if full_name not in placeholders:
                    placeholders[full_name] = type(name, (OpaqueObject,), {"pickled_name": full_name})
                return placeholders[full_name]
            raise UnsafeCheckpointError(
                f"refusing checkpoint: it references {full_name!r}, which could run code when "
                f"loaded; {_CONVERT_HINT}"
            )

    module = types.ModuleType("fat_deploy_restricted_pickle")
    module.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kw: RestrictedUnpickler(file, **kw).load()  # type: ignore[attr-defined]
    module.__name__ = "fat_deploy_restricted_pickle"
    return module


def _torch_load(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's warnings about weights_only are not the user's concern here
        return _torch_load_quietly(path)


def _torch_load_quietly(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as weights_only_error:
        if "Weights only load failed" not in str(weights_only_error):
            raise
    # weights_only rejected a global: try the restricted unpickler (placeholders, no code).
    return torch.load(  # noqa: S614 - restricted pickle_module, see module docstring
        path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module()
    )


def read_checkpoint(path: str | Path) -> Any:
    """Read a checkpoint file without executing anything it contains."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint is a directory, expected a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"not a readable .safetensors file ({error}): {path}") from None
    with path.open("rb") as handle:
        head = handle.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # torch.save zip archive, or legacy pickle
        raise CheckpointError(
            f"not a PyTorch checkpoint (neither a torch.save archive nor a pickle; expected "
            f".pth/.pt/.bin or .safetensors): {path}"
        )
    try:
        return _torch_load(path)
    except UnsafeCheckpointError as error:
        raise CheckpointError(f"{error}: {path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            TypeError, AttributeError, KeyError, IndexError, OSError) as error:
        detail = _first_sentence(str(error)) or type(error).__name__
        raise CheckpointError(
            f"not a readable PyTorch checkpoint (truncated or corrupt?): {path} ({detail})"
        ) from None


def _first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of an error, shortened at a word boundary (with an ellipsis) when still too long."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = line.split(". ", 1)[0].rstrip(".")
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


def _is_tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def extract_state_dict(obj: Any, use_ema: bool = True) -> StateDict:
    """The model weights inside a loaded checkpoint, with wrapper prefixes removed."""
    candidate: Any = obj
    if isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
        keys = _STATE_DICT_KEYS if use_ema else tuple(k for k in _STATE_DICT_KEYS if "ema" not in k)
        candidate = next((obj[k] for k in keys if _is_tensor_mapping(obj.get(k))), None)
        if candidate is None:
            # Some checkpoints keep a few non-tensor entries next to the weights.
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            candidate = tensors if len(tensors) > len(obj) // 2 else None
    if not _is_tensor_mapping(candidate):
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"no model weights found in checkpoint (top-level entries: {found})")
    state: StateDict = dict(candidate)
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_state_dict(path: str | Path, use_ema: bool = True) -> StateDict:
    """Read ``path`` safely and return its model weights (EMA weights preferred if present)."""
    return extract_state_dict(read_checkpoint(path), use_ema=use_ema)


def num_classes_of(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Classifier size from the head's weight, or None if the checkpoint has no head."""
    for key in ("head.weight", "head.fc.weight", "classifier.weight", "fc.weight"):
        if key in state_dict and state_dict[key].ndim == 2:
            return int(state_dict[key].shape[0])
    return None


def _shape_signature(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def guess_variant(state_dict: Mapping[str, torch.Tensor], candidates: Sequence[ModelSpec]) -> str | None:
    """The candidate model whose keys and shapes fit ``state_dict`` best (heads ignored)."""
    wanted = {k: tuple(v.shape) for k, v in state_dict.items() if not k.startswith("head.")}
    best: tuple[float, str] | None = None
    for spec in candidates:
        with torch.device("meta"):
            expected = _shape_signature(spec.builder(num_classes=0))
        matching = sum(1 for k, s in wanted.items() if expected.get(k) == s)
        score = matching / max(len(wanted), len(expected))
        if best is None or score > best[0]:
            best = (score, spec.name)
    return best[1] if best and best[0] > 0.5 else None


def _listing(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def apply_state_dict(model: nn.Module, state_dict: StateDict, model_name: str, source: str,
                     candidates: Sequence[ModelSpec] = ()) -> None:
    """Load weights with strict key and shape matching; explain any mismatch in one line (naming the ``candidates``
    variant the weights look like, where one fits)."""
    expected = model.state_dict()
    # BatchNorm step counters are unused at inference; some exporters drop them.
    state_dict = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state_dict}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    not_floating = [f"{k} ({str(state_dict[k].dtype).removeprefix('torch.')})" for k, v in expected.items()
                    if k in state_dict and v.is_floating_point() and not state_dict[k].is_floating_point()]
    if not_floating:
        raise CheckpointError(
            f"checkpoint {source} holds non-floating weights for {len(not_floating)} floating parameters "
            f"({_listing(not_floating)}); converting them would change the model silently")
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched, 2)}")
        guess = guess_variant(state_dict, candidates)
        if guess is None:
            hint = "; the weights match no registered variant"
        elif guess != model_name:
            hint = f"; the weights look like {guess}, try --model {guess}"
        else:
            hint = ""
        raise CheckpointError(
            f"checkpoint {source} does not fit {model_name}: {'; '.join(parts)}{hint}"
        )
    non_finite = [f"{k} ({int((~torch.isfinite(v)).sum())} of {v.numel()} values)" for k, v in state_dict.items()
                  if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise CheckpointError(f"checkpoint {source} holds NaN or Inf in {len(non_finite)} tensor(s): "
                              f"{_listing(non_finite, 2)}; a model with them gives no usable output")
    model.load_state_dict(state_dict, strict=True)
    upcast = sorted({str(v.dtype).removeprefix("torch.") for k, v in state_dict.items()
                     if v.is_floating_point() and v.dtype != expected[k].dtype})
    # Recorded on the model for the manifest: fp16/bf16 weights are upcast (exactly) to float32.
    notes: dict[str, object] = {"upcast_from": upcast, "upcast_to": "float32"} if upcast else {}
    setattr(model, "checkpoint_notes", notes)  # noqa: B010 - an attribute nn.Module does not declare
