"""Every model fat-deploy knows (FAT variants, then the efficiency-table peers): look up, list, build."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from fat_deploy.errors import UnknownModelError
from fat_deploy.models import baselines, fat  # noqa: F401  (importing them registers their models)
from fat_deploy.models.checkpoint import apply_state_dict, load_state_dict, num_classes_of
from fat_deploy.models.spec import REGISTERED_MODELS, ModelSpec, close_matches, output_classes

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models", "output_classes"]


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, FAT first, optionally only one family (``"fat"``, ...)."""
    ordered = sorted(REGISTERED_MODELS.values(), key=lambda spec: spec.family != "fat")  # stable: registration order
    return [spec.name for spec in ordered if family is None or spec.family == family]


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name``; unknown names raise with the closest matches."""
    key = name.strip().lower().replace("-", "_")
    if key in REGISTERED_MODELS:
        return REGISTERED_MODELS[key]
    close = close_matches(key, list_models())
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(f"unknown model {name!r}: {hint}known models: {', '.join(list_models())}")


def create_model(
    name: str,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a registered model in eval mode, optionally with weights from ``checkpoint``.

    ``num_classes`` defaults to 1000, or to the checkpoint's head size when a checkpoint is given
    (fine-tuned models). Checkpoints are loaded safely (no arbitrary unpickling).
    """
    spec = get_spec(name)
    state_dict = None
    if checkpoint is not None:
        state_dict = load_state_dict(checkpoint)
        found = num_classes_of(state_dict)
        if num_classes is None:
            num_classes = found if found is not None else 0
    model = spec.builder(num_classes=1000 if num_classes is None else num_classes, **kwargs)
    if state_dict is not None:
        apply_state_dict(model, state_dict, spec.name, source=str(checkpoint),
                         candidates=[get_spec(n) for n in list_models(spec.family)])
    model.eval()
    return model
