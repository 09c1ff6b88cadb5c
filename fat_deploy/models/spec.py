"""What a model is to fat-deploy (:class:`ModelSpec`) and the table the model modules register into."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from fat_deploy.paper import PaperNumbers, paper_rows

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What a user needs to know to feed and compare a model."""

    name: str
    builder: ModelBuilder = field(repr=False)
    family: str
    input_size: int
    source: str
    official: bool
    paper_label: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_size: int | None = None  # shorter side before the centre crop; None: input_size / 0.875
    interpolation: str = "bicubic"
    min_input_size: int = 32
    fixed_input_size: bool = False  # built for input_size only (e.g. learned position tables of that size)
    # The module that reads the image (its first convolutions): where int8 recipes that quantize activations by
    # op type lose most (LiteRT's int8-static keeps it float; see fat_deploy/runtimes/tflite/converter.py).
    stem: str | None = None

    @property
    def paper(self) -> PaperNumbers | None:
        """The paper's row for this model (labelled as the paper's), if it has one."""
        return paper_rows().get(self.paper_label) if self.paper_label else None

    @property
    def eval_resize(self) -> int:
        return self.resize_size or round(self.input_size / 0.875)


REGISTERED_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model; names are lower-case and unique."""
    if spec.name != spec.name.lower():
        raise ValueError(f"model names are lower-case registry keys, got {spec.name!r}")
    if spec.name in REGISTERED_MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    REGISTERED_MODELS[spec.name] = spec
    return spec


_LOOKALIKES = str.maketrans({"o": "0", "l": "1", "i": "1"})


def close_matches(key: str, names: list[str], limit: int = 3) -> list[str]:
    """Names closest to ``key``: typed look-alikes first (``fat_bo`` -> ``fat_b0``), ties in registry order."""
    folded = key.translate(_LOOKALIKES)
    scored = []
    for index, name in enumerate(names):
        score = 2.0 if name.translate(_LOOKALIKES) == folded else difflib.SequenceMatcher(None, key, name).ratio()
        if score >= 0.5:
            scored.append((-score, index, name))
    return [name for _, _, name in sorted(scored)[:limit]]


def output_classes(model: nn.Module) -> int:
    """Size of a model's classifier output (0 for a headless feature extractor)."""
    value = getattr(model, "num_classes", None)
    if isinstance(value, int):
        return value
    for name in ("head", "classifier", "fc"):
        out_features = getattr(getattr(model, name, None), "out_features", None)
        if isinstance(out_features, int):
            return out_features
    return 0
