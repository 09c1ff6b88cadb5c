"""Deploy form: the same function as the faithful model, with the training-only parts gone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn as nn
from timm.layers import DropPath

from fat_deploy.models import create_model, to_deploy
from fat_deploy.models.deploy import (
    ChannelSpatialNorm,
    DeployFASA,
    ReducedChannelSpatialNorm,
    TiledDepthwiseConv,
    convert_sync_batchnorm,
    executorch_form,
    litert_form,
    xnnpack_form,
)
from fat_deploy.models.fat import FAT_CONFIGS
from fat_deploy.models.synthetic import randomize_norm_stats


def _max_relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("name", list(FAT_CONFIGS))
def test_deploy_form_is_equivalent(name: str) -> None:
    torch.manual_seed(1)
    model = randomize_norm_stats(create_model(name), seed=1)
    deployed = to_deploy(model)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        assert _max_relative_diff(model(x), deployed(x)) <= 1e-5


@pytest.mark.parametrize("name", list(FAT_CONFIGS))
@pytest.mark.parametrize("form", [xnnpack_form, litert_form, executorch_form])
def test_xnnpack_form_is_equivalent(name: str, form: Callable[[nn.Module], nn.Module]) -> None:
    torch.manual_seed(2)
    model = randomize_norm_stats(create_model(name), seed=2)
    deployed = form(to_deploy(model))
    assert not any(type(m) is ChannelSpatialNorm for m in deployed.modules())
    assert all(m.channel_mean_by_reshape == (form is not litert_form)
               for m in deployed.modules() if isinstance(m, ReducedChannelSpatialNorm))
    assert all(m.pad_inputs == (form is executorch_form) for m in deployed.modules() if isinstance(m, TiledDepthwiseConv))
    assert any(isinstance(m, ReducedChannelSpatialNorm) and m.weight is not None for m in deployed.modules())
    assert all(m.batched_heads for m in deployed.modules() if isinstance(m, DeployFASA))
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.kernel_size[0] > 5 for m in deployed.modules())
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        assert _max_relative_diff(model(x), deployed(x)) <= 1e-5


@pytest.mark.parametrize("kernel,bias", [(7, True), (9, False), (11, True)])
def test_tiled_depthwise_conv_is_the_same_conv(kernel: int, bias: bool) -> None:
    torch.manual_seed(kernel)
    conv = nn.Conv2d(6, 6, kernel, padding=kernel // 2, groups=6, bias=bias).eval()
    tiled = TiledDepthwiseConv(conv)
    assert all(piece.kernel_size == (5, 5) for piece in tiled.tiles) and len(tiled.tiles) == 4 + 5 * (kernel > 10)
    x = torch.randn(2, 6, 13, 9)
    with torch.no_grad():
        assert _max_relative_diff(conv(x), tiled(x)) <= 1e-6
        tiled.pad_inputs = True  # each tile reads a zero-padded input instead of slicing an oversized output
        assert _max_relative_diff(conv(x), tiled(x)) <= 1e-6
    with pytest.raises(ValueError, match="only stride-1"):
        TiledDepthwiseConv(nn.Conv2d(6, 6, 7, stride=2, padding=3, groups=6))


def test_deploy_form_at_224_and_headless(fat_b0: nn.Module) -> None:
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert _max_relative_diff(fat_b0(x), to_deploy(fat_b0)(x)) <= 1e-5
    headless = randomize_norm_stats(create_model("fat_b0", num_classes=0))
    with torch.no_grad():
        assert _max_relative_diff(headless(x), to_deploy(headless)(x)) <= 1e-5


def test_deploy_form_drops_training_only_modules(fat_b0: nn.Module) -> None:
    fat_b0_train = create_model("fat_b0")
    assert any(isinstance(m, DropPath) for m in fat_b0_train.modules())
    deployed = to_deploy(fat_b0)
    kinds = {type(m) for m in deployed.modules()}
    assert not kinds & {nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, DropPath}
    assert not deployed.training
    # Fewer parameters (BN and norm affines folded away), the original is untouched.
    assert sum(p.numel() for p in deployed.parameters()) < sum(p.numel() for p in fat_b0.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in fat_b0.modules())


def _to_sync_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            sync = nn.SyncBatchNorm(child.num_features)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync.eval())
        else:
            _to_sync_batchnorm(child)


def test_sync_batchnorm_from_the_official_code_is_converted(fat_b0: nn.Module) -> None:
    import copy

    official_like = copy.deepcopy(fat_b0)
    _to_sync_batchnorm(official_like)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in official_like.modules())
    converted = convert_sync_batchnorm(copy.deepcopy(official_like))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), fat_b0(x))
        assert _max_relative_diff(fat_b0(x), to_deploy(official_like)(x)) <= 1e-5
