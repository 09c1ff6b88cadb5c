"""The efficiency-table peers: reference sizes, forward, deploy rewrites (exact), export to ONNX and TFLite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fat_deploy.errors import InputSizeError
from fat_deploy.exporters.api import resolve_img_size
from fat_deploy.models import create_model, get_spec, list_models, profile, to_deploy
from fat_deploy.models.baselines import PEERS
from fat_deploy.models.baselines._parc import HORIZONTAL, VERTICAL
from fat_deploy.models.baselines.edgevit import TiledDepthwiseUpsample
from fat_deploy.models.baselines.parcnet import GlobalCircularConv
from fat_deploy.models.baselines.tiny_moat import relative_position_index
from fat_deploy.models.deploy import densify_grouped_pointwise
from fat_deploy.models.synthetic import randomize_norm_stats

PEER_NAMES = list(PEERS)

# Reference counts (the peers' papers and official code; tiny-MOAT exact from deeplab2's configs): params and GMACs
# (MACs including attention matmuls, the
# convention the peers' own papers and counters use). Exact integers where the reference is exact.
REFERENCE = {
    "edgevit_xxs": (4.07, 0.55),
    "edgevit_xs": (6.77, 1.13),
    "tiny_moat_0": (3_355_348, 0.775),
    "tiny_moat_2": (9_772_741, 2.239),
    "parcnet_s": (5.04, 1.66),
    "parc_resnet50": (23.74, 3.94),
    # timm models: the paper's table (params rounded to 0.1M, FLOPs to 0.1G)
    "mobilevit_xs": (2.3, 1.1),
    "edgenext_small": (5.6, 1.3),
    "efficientnet_b3": (12.0, 1.8),
}


def test_every_peer_of_the_paper_table_is_registered() -> None:
    assert set(PEER_NAMES) <= set(list_models())
    labels = {get_spec(name).paper_label for name in PEER_NAMES}
    assert labels == {
        "EdgeViT-XXS", "EdgeViT-XS", "MobileViT-XS", "tiny-MOAT-0", "tiny-MOAT-2", "ParC-Net-S",
        "EdgeNeXt-S", "ParC-ResNet50", "EfficientNet-B3",
    }
    for name in PEER_NAMES:
        spec = get_spec(name)
        assert spec.paper is not None and spec.paper.input_size == spec.input_size


@pytest.mark.parametrize("name", PEER_NAMES)
def test_peer_size_and_macs_match_the_reference(name: str) -> None:
    spec = get_spec(name)
    model = create_model(name)
    measured = profile(model, spec.input_size)  # runs a forward at the paper's input size
    params, gmacs = REFERENCE[name]
    if isinstance(params, int):
        assert measured.params == params
    elif spec.family == "timm_peers":
        assert abs(measured.params_m - params) <= 0.25  # the paper's rounding (12.23M is quoted as 12.0M)
    else:
        assert abs(measured.params_m / params - 1) <= 0.005
    tolerance = 0.01 if spec.family != "timm_peers" else 0.1
    assert abs(measured.gmacs_total / gmacs - 1) <= tolerance, measured
    with torch.no_grad():
        logits = model(torch.randn(1, 3, spec.input_size, spec.input_size))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_peers_load_their_own_state_dict_and_custom_heads(tmp_path: Path) -> None:
    model = create_model("tiny_moat_0", num_classes=10)
    path = tmp_path / "moat.pth"
    torch.save(model.state_dict(), path)
    loaded = create_model("tiny_moat_0", checkpoint=path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("name", ["edgevit_xxs", "tiny_moat_0", "parc_resnet50", "parcnet_s"])
def test_fixed_size_peers_refuse_other_sizes(name: str) -> None:
    spec = get_spec(name)
    with pytest.raises(InputSizeError, match=f"{name} is built for {spec.input_size}x{spec.input_size} inputs only"):
        resolve_img_size(spec.input_size + 32, spec)
    assert resolve_img_size(None, spec) == (spec.input_size, spec.input_size)
    with pytest.raises(ValueError, match="is built for"):
        create_model(name)(torch.randn(1, 3, spec.input_size + 32, spec.input_size + 32))


@pytest.mark.parametrize("name", PEER_NAMES)
def test_deploy_form_computes_the_same_function(name: str) -> None:
    spec = get_spec(name)
    model = randomize_norm_stats(create_model(name))
    deployed = to_deploy(model)
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        expected, actual = model(x), deployed(x)
    assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()
    kinds = {type(m).__name__ for m in deployed.modules()}
    assert "ConvTranspose2d" not in kinds and "GlobalCircularConv" not in kinds and "PositionEmbedding" not in kinds
    if name.startswith("tiny_moat"):
        assert all(not hasattr(m, "relative_bias_table") for m in deployed.modules())


# ---------------------------------------------------------------- the rewrites, one by one


@pytest.mark.parametrize("ratio,size", [(4, 14), (2, 7), (2, 3)])
def test_depthwise_transposed_conv_equals_upsample_times_tiled_kernel(ratio: int, size: int) -> None:
    conv = nn.ConvTranspose2d(6, 6, ratio, stride=ratio, groups=6)
    x = torch.randn(2, 6, size, size)
    with torch.no_grad():
        torch.testing.assert_close(TiledDepthwiseUpsample(conv, (size, size))(x), conv(x), rtol=0, atol=1e-6)


def test_tiled_upsample_refuses_convs_it_cannot_rewrite() -> None:
    with pytest.raises(ValueError, match="kernel == stride"):
        TiledDepthwiseUpsample(nn.ConvTranspose2d(4, 4, 3, stride=2, groups=4), (7, 7))


@pytest.mark.parametrize("direction", [VERTICAL, HORIZONTAL])
@pytest.mark.parametrize("meta,feature", [(8, 8), (32, 28)])
def test_circular_conv_wraps_around_and_bakes_exactly(direction: str, meta: int, feature: int) -> None:
    op = GlobalCircularConv(3, direction, meta)
    x = torch.randn(1, 3, feature, feature)
    with torch.no_grad():
        out = op(x)
        kernel = op.meta_kernel if meta == feature else F.interpolate(
            op.meta_kernel, size=(feature, 1) if direction == VERTICAL else (1, feature),
            mode="bilinear", align_corners=True)
        taps = kernel.flatten(1)  # (C, K)
        axis = 2 if direction == VERTICAL else 3
        # definition: out[i] = sum_k w[k] * x[(i + k) mod K]
        expected = sum(taps[:, k].view(1, -1, 1, 1) * torch.roll(x, -k, dims=axis) for k in range(feature))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(op.baked(feature)(x), out, rtol=0, atol=1e-6)


def test_grouped_pointwise_conv_becomes_block_diagonal_dense() -> None:
    model = nn.Sequential(nn.Conv2d(8, 4, 1, groups=4), nn.Conv2d(4, 4, 3, groups=4, padding=1))
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        expected = model(x)
        densify_grouped_pointwise(model)
        assert model[0].groups == 1 and model[1].groups == 4  # depthwise convs stay as they are
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_relative_position_index_matches_the_definition() -> None:
    size = 3
    index = relative_position_index(size)
    positions = [(i, j) for i in range(size) for j in range(size)]
    for a, (ya, xa) in enumerate(positions):
        for b, (yb, xb) in enumerate(positions):
            assert index[a, b] == (ya - yb + size - 1) * (2 * size - 1) + (xa - xb + size - 1)


# ---------------------------------------------------------------- export, verified in each runtime


@pytest.mark.slow
@pytest.mark.parametrize("name", PEER_NAMES)
def test_peer_exports_to_onnx_and_tflite_and_verifies(name: str, tmp_path: Path) -> None:
    from fat_deploy.exporters import export

    model = randomize_norm_stats(create_model(name))
    for fmt in ("onnx", "tflite"):
        artifact = export(model, fmt, out=tmp_path, model_name=name)
        assert artifact.status == "passed", (fmt, artifact.error, artifact.notes)
        assert artifact.path is not None and artifact.path.stat().st_size > 1_000_000
        assert artifact.comparison is not None and artifact.comparison["cosine_min"] > 0.9999
