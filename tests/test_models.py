"""The FAT family: registry, exact sizes, MACs, any input size, and FASA against its equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fat_deploy.errors import UnknownModelError
from fat_deploy.models import create_model, get_spec, list_models, profile
from fat_deploy.models.fat import FASA, FAT_CONFIGS

# From the official code (github.com/qhfan/FAT, counted with its model definitions): params, state_dict entries,
# GMACs conv+linear, GMACs with attention matmuls, at 224.
OFFICIAL_COUNTS = {
    "fat_b0": (4_494_488, 487, 0.701, 0.754),
    "fat_b1": (7_819_720, 487, 1.173, 1.243),
    "fat_b2": (13_466_728, 487, 2.038, 2.131),
    "fat_b3": (29_196_264, 1039, 4.425, 4.632),
}
# Derived variants (docs/DESIGN.md: configurations derived from the paper's Table 1): params (M), GMACs total,
# GMACs conv-only.
DERIVED_COUNTS = {
    "fat_b3_st": (29.32, 4.618, 4.477),
    "fat_b4": (51.72, 8.532, 8.303),
    "fat_b5": (90.56, 14.888, 14.583),
}
FAT_NAMES = list(FAT_CONFIGS)


def test_registry_lists_every_fat_variant() -> None:
    assert list_models("fat") == FAT_NAMES


@pytest.mark.parametrize("name", ["fat-b0", "FAT_B0", " fat_b0 "])
def test_names_are_normalised(name: str) -> None:
    assert get_spec(name).name == "fat_b0"


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'fat_b9'.*did you mean .*fat_b"):
        create_model("fat_b9")


@pytest.mark.parametrize("name", list(OFFICIAL_COUNTS))
def test_official_variants_match_the_official_code(name: str) -> None:
    params, entries, gmacs, gmacs_total = OFFICIAL_COUNTS[name]
    model = create_model(name)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == entries
    measured = profile(model, 224)
    assert measured.params == params
    assert round(measured.gmacs, 3) == gmacs
    assert round(measured.gmacs_total, 3) == gmacs_total
    spec = get_spec(name)
    assert spec.official and spec.paper is not None
    assert abs(spec.paper.params_m - params / 1e6) / spec.paper.params_m < 0.01  # the paper rounds


@pytest.mark.parametrize("name", list(DERIVED_COUNTS))
def test_derived_variants_are_labelled_and_sized(name: str) -> None:
    spec = get_spec(name)
    assert not spec.official
    assert "derived from the paper's table, not an official configuration" in spec.source
    params_m, gmacs_total, gmacs = DERIVED_COUNTS[name]
    with torch.device("meta"):
        meta_model = spec.builder()
    assert round(sum(p.numel() for p in meta_model.parameters()) / 1e6, 2) == params_m
    assert spec.paper is not None  # distance to the paper's numbers is reportable
    assert spec.paper.params_m == {"fat_b3_st": 29, "fat_b4": 52, "fat_b5": 88}[name]


def test_derived_variant_macs() -> None:
    measured = profile(create_model("fat_b3_st"), 224)
    params_m, gmacs_total, gmacs = DERIVED_COUNTS["fat_b3_st"]
    assert round(measured.gmacs, 3) == gmacs
    assert round(measured.gmacs_total, 3) == gmacs_total


@pytest.mark.parametrize("name", FAT_NAMES)
def test_forward_shape_at_other_size(name: str) -> None:
    model = create_model(name, num_classes=7)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (288, 288), (320, 320), (200, 320), (97, 131)])
def test_any_input_size(size: tuple[int, int]) -> None:
    model = create_model("fat_b0")
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_headless_model_returns_features() -> None:
    model = create_model("fat_b1", num_classes=0)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 384)


def _fasa_from_equations(attn: FASA, x: torch.Tensor) -> torch.Tensor:
    """FASA written directly from the paper's equations (arXiv:2306.00396, Sec. 3.2), one head at a time."""
    b, c, h, w = x.shape
    d = attn.dim_head
    q_local = F.conv2d(x, attn.q.weight, attn.q.bias)
    kv = F.conv2d(attn.pool(x), attn.kv.weight, attn.kv.bias)
    keys, values = kv[:, :c].flatten(2), kv[:, c:].flatten(2)  # (b, c, HW)
    queries = q_local.flatten(2)
    heads = []
    for m in range(attn.num_heads):
        qm, km, vm = (t[:, m * d : (m + 1) * d] for t in (queries, keys, values))  # (b, d, N)
        weights = torch.softmax(torch.einsum("bdn,bdk->bnk", qm, km) * d**-0.5, dim=-1)
        heads.append(torch.einsum("bnk,bdk->bdn", weights, vm))
    global_feat = torch.cat(heads, dim=1).reshape(b, c, h, w)
    local = attn.local_mixer(q_local)
    gated = local * torch.sigmoid(local) * global_feat * torch.sigmoid(global_feat)
    return F.conv2d(gated, attn.mixer.weight, attn.mixer.bias)


@pytest.mark.parametrize("window_size,size", [(8, (56, 56)), (4, (28, 20)), (2, (14, 15)), (1, (7, 7))])
def test_fasa_matches_its_equations(window_size: int, size: tuple[int, int]) -> None:
    torch.manual_seed(window_size)
    attn = FASA(dim=32, kernel_size=5, num_heads=2, window_size=window_size).eval()
    x = torch.randn(2, 32, *size)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _fasa_from_equations(attn, x), rtol=1e-5, atol=1e-5)


def test_official_state_dict_key_layout() -> None:
    keys = set(create_model("fat_b0").state_dict())
    for key in [
        "patch_embed.conv1.conv.0.weight",
        "patch_embed.conv4.conv.1.running_var",
        "patch_embed.conv5.bias",
        "patch_embed.layernorm.weight",
        "layers.0.blocks.0.attn.pool.conv0.weight",
        "layers.0.blocks.0.attn.pool.linear1.weight",
        "layers.0.blocks.0.attn.pool.bn2.num_batches_tracked",
        "layers.1.blocks.1.downsample.0.weight",
        "layers.1.blocks.1.downsample.1.running_mean",
        "layers.1.blocks.1.downsample.2.weight",
        "layers.2.blocks.5.ffn.bn.weight",
        "layers.3.blocks.1.attn.kv.weight",
        "norm.weight",
        "head.bias",
    ]:
        assert key in keys, key
    assert not any(k.startswith("layers.3.blocks.0.attn.pool.") for k in keys)  # stage 4: identity
    assert not any(".downsample." in k for k in keys if k.startswith("layers.3."))
