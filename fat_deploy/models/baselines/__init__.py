"""The efficiency-table peers: own implementations where timm lacks them, thin timm wrappers where it has them.

Importing this package only registers the peers; each implementation module (and timm / torchvision) is imported
the first time one of its models is built, so the command-line tools start quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch.nn as nn

from fat_deploy.environment import package_version
from fat_deploy.models.spec import ModelSpec, register_model

NO_NORMALISATION = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

SOURCES = {
    "edgevit": "own implementation of saic-fi/edgevit src/edgevit.py (module names kept); the repo has no weights",
    "tiny_moat": "own implementation of google-research/deeplab2 moat.py tiny_moat*_config; TF weights not ported",
    "parcnet": "own implementation of hkzhang91/ParC-Net edgeformer scale_s (gcc_ca, concat fusion); "
               "official key names not mapped",
    "parc_resnet": "torchvision ResNet-50 + own ParC block (hkzhang91/ParC-Net ParC_ConvNets/ParC_resnet50.py); "
                   "no public weights",
    "timm_peers": "timm {} `{}` (wrapped, not copied; timm checkpoints load)",
}

# name: (implementation module, paper label, input size, fixed input size, spec overrides)
PEERS: dict[str, tuple[str, str, int, bool, dict[str, Any]]] = {
    "edgevit_xxs": ("edgevit", "EdgeViT-XXS", 224, True, {"resize_size": 256}),
    "edgevit_xs": ("edgevit", "EdgeViT-XS", 224, True, {"resize_size": 256}),
    "mobilevit_xs": ("timm_peers", "MobileViT-XS", 256, False, {"resize_size": 288, **NO_NORMALISATION}),
    "tiny_moat_0": ("tiny_moat", "tiny-MOAT-0", 224, True, {"resize_size": 256}),
    "tiny_moat_2": ("tiny_moat", "tiny-MOAT-2", 224, True, {"resize_size": 256}),
    "parcnet_s": ("parcnet", "ParC-Net-S", 256, True,
                  {"resize_size": 288, "interpolation": "bilinear", **NO_NORMALISATION}),
    "edgenext_small": ("timm_peers", "EdgeNeXt-S", 256, False, {"resize_size": 293}),
    "parc_resnet50": ("parc_resnet", "ParC-ResNet50", 224, True, {"resize_size": 256, "interpolation": "bilinear"}),
    "efficientnet_b3": ("timm_peers", "EfficientNet-B3", 300, False, {"resize_size": 332}),
}


def _lazy_builder(module_name: str, variant: str):  # type: ignore[no-untyped-def]
    def build(**kwargs: Any) -> nn.Module:
        module = importlib.import_module(f"fat_deploy.models.baselines.{module_name}")
        return module.build(variant, **kwargs)

    return build


for _name, (_module, _label, _size, _fixed, _overrides) in PEERS.items():
    _source = SOURCES[_module]
    register_model(
        ModelSpec(
            name=_name,
            builder=_lazy_builder(_module, _name),
            family=_module,
            input_size=_size,
            source=_source.format(package_version("timm"), _name) if _module == "timm_peers" else _source,
            official=True,
            paper_label=_label,
            fixed_input_size=_fixed,
            **_overrides,
        )
    )
