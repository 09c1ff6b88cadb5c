"""Peers that timm already implements (timm is a dependency): thin wrappers with export-safe settings.

* ``mobilevit_xs`` (256, no mean/std normalisation): its transformer blocks are built with plain
  matmul + softmax attention instead of fused SDPA, which not every converter lowers.
* ``edgenext_small`` (256).
* ``efficientnet_b3`` at 300, the paper's resolution: timm's static-padding variant (``tf_efficientnet_b3``'s
  TF 'same' padding is computed from the input shape at run time); same architecture and size.

timm's own key names are kept, so timm / Hugging Face checkpoints of these models load (``--checkpoint``).
"""

from __future__ import annotations

import timm
import torch.nn as nn
from timm.layers.config import set_layer_config


def _no_fused_attention(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", False)  # noqa: B010 - a timm attribute nn.Module does not declare
    return model


def build(variant: str, num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """timm's model ``variant`` with random weights (nothing is downloaded) and export-safe layers."""
    with set_layer_config(exportable=True, scriptable=False):
        model = timm.create_model(variant, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    return _no_fused_attention(model)
