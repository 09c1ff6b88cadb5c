"""Weights that look trained, for tests and benchmarks (no checkpoint can be downloaded here).

Freshly initialised norms are identities (BatchNorm statistics 0/1, affines 1/0): conversions that mishandle a
norm's statistics or affine pass on them unnoticed. These give every norm non-trivial values, as training does.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def randomize_norm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm/GroupNorm/LayerNorm non-trivial statistics and affine terms, as training does (in place)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None and module.running_var is not None:
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) * 2.5 + 0.3)
            if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.affine or (
                    isinstance(module, nn.LayerNorm) and module.elementwise_affine):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.3)
    return model
