"""Deploy-ready form: export-friendly rewrites that compute the same function.

Applied by the exporters and the latency harness unless turned off. Generic steps work on any
model (SyncBatchNorm -> BatchNorm2d, Conv2d+BatchNorm2d folding inside ``nn.Sequential``); FAT
blocks are rebuilt as :class:`DeployFATBlock`:

* CPE ``x + dw(x)`` and the ConvFFN's ``h + dw(h)`` become one depthwise kernel (centre tap + 1),
  and every BatchNorm is folded into the convolution before it;
* the K/V projection stays one 1x1 conv, split on channels (no rank-5 reshape/permute), with the
  attention scale folded into the K rows;
* GroupNorm(1, C) becomes a LayerNorm over (C, H, W) (one ONNX LayerNormalization node); its
  per-channel affine is folded into the following 1x1 conv / linear layer where that is exact
  (before the ConvFFN, before the head, and before FASA in the last stage);
* drop-path is removed.

Runtimes that run on XNNPACK (ExecuTorch, TFLite) further apply :func:`xnnpack_form` (their format's
``runtime_form``): large depthwise kernels tiled into 5x5 ones, LayerNorms from rank-4 means, rank-3 attention;
LiteRT's :func:`litert_form` also keeps the norms' channel mean free of reshapes (fewer layout transposes).

Peers rewrite themselves where a layer blocks a runtime (modules with a ``deploy_form()``: EdgeViT's depthwise
transposed conv, ParC-Net's run-time-built kernels, MOAT's relative-position lookup), and grouped non-depthwise
1x1 convs become block-diagonal dense ones.
"""

from __future__ import annotations

import copy
from typing import Protocol, cast, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fat_deploy.models.fat import FASA, FAT, ConvFFN, FATBlock


class ChannelSpatialNorm(nn.Module):
    """GroupNorm(1, C) as LayerNorm over (C, H, W), with an optional per-channel affine.

    ``input_scale`` (a power of two, 1 by default) multiplies the input before the statistics, with ``eps`` scaled by
    its square: the same function (power-of-two scaling is exact in binary floating point), but sums of squares
    that stay inside float16's range on devices that accumulate in float16 (:mod:`fat_deploy.models.float16_norms`).
    """

    input_scale = 1.0

    def __init__(self, eps: float, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = None if weight is None else nn.Parameter(weight.detach().reshape(1, -1, 1, 1).clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().reshape(1, -1, 1, 1).clone())

    @classmethod
    def from_group_norm(cls, norm: nn.GroupNorm, keep_affine: bool = True) -> ChannelSpatialNorm:
        if norm.num_groups != 1:
            raise ValueError("only GroupNorm(1, C) is a LayerNorm over (C, H, W)")
        has_affine = keep_affine and norm.affine
        return cls(norm.eps, norm.weight if has_affine else None, norm.bias if has_affine else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps
        if self.input_scale != 1.0:
            x, eps = x * self.input_scale, eps * self.input_scale**2
        x = F.layer_norm(x, x.shape[1:], eps=eps)
        if self.weight is not None:
            x = x * self.weight
        if self.bias is not None:
            x = x + self.bias
        return x


class ReducedChannelSpatialNorm(ChannelSpatialNorm):
    """The same normalisation from means over (H, W) only (what XNNPACK's global average pooling computes):
    the per-channel means of ``x`` (B, C, 1, 1), then their mean over C, for the mean and for the variance.
    Exact up to float rounding (every channel has H*W values). For runtimes without a LayerNorm kernel over
    (C, H, W): ExecuTorch's XNNPACK partitioner leaves ``native_layer_norm`` to a portable kernel.

    The mean over C is taken after a reshape to (B, 1, C, 1) by default (ExecuTorch's partitioner delegates means
    over the last two dims only), or directly over dim 1 with ``channel_mean_by_reshape = False`` (LiteRT: the
    layout pass keeps a rank-4 mean in NHWC, where a reshape forces a transpose to NCHW and back)."""

    channel_mean_by_reshape = True

    def _mean_chw(self, x: torch.Tensor) -> torch.Tensor:
        per_channel = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        if not self.channel_mean_by_reshape:
            return per_channel.mean(dim=1, keepdim=True)  # (B, 1, 1, 1)
        return per_channel.reshape(x.shape[0], 1, x.shape[1], 1).mean(dim=(2, 3), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps
        if self.input_scale != 1.0:
            x, eps = x * self.input_scale, eps * self.input_scale**2
        centred = x - self._mean_chw(x)
        x = centred * torch.rsqrt(self._mean_chw(centred * centred) + eps)
        if self.weight is not None:
            x = x * self.weight
        if self.bias is not None:
            x = x + self.bias
        return x


class TiledDepthwiseConv(nn.Module):
    """A stride-1 "same" depthwise conv with a kernel larger than ``tile`` as a sum of ``tile`` x ``tile`` ones.

    XNNPACK has fast depthwise kernels up to 5x5 (25 taps); a 7x7 or 9x9 depthwise conv falls back to its
    generic grouped IGEMM, measured 16x slower than a 5x5 one (160x14x14, 1 thread, AMD EPYC family 25 model 17,
    executorch 1.5.1). The KxK kernel is cut into tiles of at most 5x5,
    each zero-padded to 5x5 and placed so that a 5x5 conv with the original padding, read at the tile's offset,
    computes that tile's share of the output; the shares add up to the original conv (float rounding aside).

    With ``pad_inputs`` each tile instead reads the input zero-padded on the sides its offset needs (top
    ``p - r0``, bottom ``4 - p + r0``) through an unpadded 5x5 conv, so it computes exactly the H x W output: no
    oversized output, no output slices. XNNPACK fuses such a zero pad into the convolution; ExecuTorch's FAT-B0
    went from 24.6 to 23.1 ms with it (one run, AMD EPYC family 25 model 17), LiteRT from 24.6 to 25.4 ms, so
    only ExecuTorch's form uses it.
    """

    pad_inputs = False

    def __init__(self, conv: nn.Conv2d, tile: int = 5) -> None:
        super().__init__()
        self.tile = tile
        channels, (k, k_w) = conv.in_channels, conv.kernel_size
        if (conv.groups != channels or conv.out_channels != channels or k != k_w or conv.stride != (1, 1)
                or conv.dilation != (1, 1) or conv.padding != (k // 2, k // 2) or k % 2 == 0 or k <= tile):
            raise ValueError("only stride-1 'same' depthwise convs with an odd square kernel larger than the tile")
        self.padding = k // 2
        weight = conv.weight.detach()
        self.offsets: list[tuple[int, int]] = []
        self.tiles = nn.ModuleList()
        starts = range(0, k, tile)
        for row in starts:
            for col in starts:
                r0, c0 = min(row, k - tile), min(col, k - tile)
                part = torch.zeros(channels, 1, tile, tile)
                rows, cols = slice(row, min(row + tile, k)), slice(col, min(col + tile, k))
                part[:, :, row - r0:rows.stop - r0, col - c0:cols.stop - c0] = weight[:, :, rows, cols]
                piece = nn.Conv2d(channels, channels, tile, padding=self.padding, groups=channels, bias=False)
                piece.weight.data.copy_(part)
                self.tiles.append(piece)
                self.offsets.append((r0, c0))
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        out = None
        for piece, (r0, c0) in zip(self.tiles, self.offsets):
            if self.pad_inputs:
                top, left = self.padding - r0, self.padding - c0
                padded = F.pad(x, (left, self.tile - 1 - left, top, self.tile - 1 - top))
                conv = cast(nn.Conv2d, piece)
                share = F.conv2d(padded, conv.weight, None, 1, 0, 1, conv.groups)
            else:
                share = piece(x)[:, :, r0:r0 + height, c0:c0 + width]
            out = share if out is None else out + share
        assert out is not None
        return out if self.bias is None else out + self.bias


def tile_large_depthwise(model: nn.Module, tile: int = 5) -> nn.Module:
    """Every stride-1 'same' depthwise conv with a kernel larger than ``tile`` as a :class:`TiledDepthwiseConv`."""
    for name, child in list(model.named_children()):
        if (isinstance(child, nn.Conv2d) and child.groups == child.in_channels == child.out_channels
                and child.kernel_size[0] == child.kernel_size[1] > tile and child.kernel_size[0] % 2 == 1
                and child.stride == (1, 1) and child.dilation == (1, 1)
                and child.padding == (child.kernel_size[0] // 2,) * 2):
            setattr(model, name, TiledDepthwiseConv(child, tile))
        else:
            tile_large_depthwise(child, tile)
    return model


def pad_tile_inputs(model: nn.Module, pad: bool) -> nn.Module:
    """Every :class:`TiledDepthwiseConv` of ``model`` reading zero-padded inputs (``pad``) or slicing its output;
    in place."""
    for module in model.modules():
        if isinstance(module, TiledDepthwiseConv):
            module.pad_inputs = pad
    return model


def executorch_form(model: nn.Module) -> nn.Module:
    """:func:`xnnpack_form` with the depthwise tiles reading zero-padded inputs (``TiledDepthwiseConv.pad_inputs``),
    which ExecuTorch's XNNPACK runs faster; in place."""
    return pad_tile_inputs(xnnpack_form(model), pad=True)


def xnnpack_form(model: nn.Module) -> nn.Module:
    """The deploy form as XNNPACK (through ExecuTorch's partitioner) takes it whole and fast, in place: LayerNorms
    over (C, H, W) as :class:`ReducedChannelSpatialNorm`, FASA with heads folded into the batch (rank-3 bmm),
    depthwise kernels larger than 5x5 tiled (:class:`TiledDepthwiseConv`)."""
    tile_large_depthwise(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is ChannelSpatialNorm:
                reduced = ReducedChannelSpatialNorm(child.eps, child.weight, child.bias)
                reduced.input_scale = child.input_scale
                setattr(parent, name, reduced)
            elif isinstance(child, DeployFASA):
                child.batched_heads = True
    return model


def litert_form(model: nn.Module) -> nn.Module:
    """:func:`xnnpack_form` as LiteRT's converter lays it out best, in place: the norms' mean over C taken as a
    rank-4 mean (no reshape), which litert-torch's layout pass keeps in NHWC. FAT-B0 .tflite at 224: TRANSPOSE
    115 -> 61, RESHAPE 100 -> 48, same XNNPACK time (24.7 ms both, one run, AMD EPYC family 25 model 17)."""
    xnnpack_form(model)
    for module in model.modules():
        if isinstance(module, ReducedChannelSpatialNorm):
            module.channel_mean_by_reshape = False
    return model


def _affine_into_pointwise(norm: nn.GroupNorm, conv: nn.Conv2d | nn.Linear) -> None:
    """Fold ``norm``'s affine into the 1x1 conv / linear that reads it: W' = W*g, b' = b + W@beta."""
    gamma, beta = norm.weight.detach(), norm.bias.detach()
    weight = conv.weight.detach()
    flat = weight.reshape(weight.shape[0], weight.shape[1])
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0])
    new_bias = bias + flat @ beta
    conv.weight.data = (flat * gamma).reshape(weight.shape)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.data = new_bias


def _add_identity(conv: nn.Conv2d) -> nn.Conv2d:
    """``x + dwconv(x)`` as one depthwise conv: add 1 to the centre tap (stride 1, odd kernel)."""
    if conv.groups != conv.in_channels or conv.stride != (1, 1):
        raise ValueError("identity folding needs a stride-1 depthwise conv")
    fused = copy.deepcopy(conv)
    kh, kw = conv.kernel_size
    fused.weight.data[:, 0, kh // 2, kw // 2] += 1.0
    return fused


class DeployFASA(nn.Module):
    """FASA with the K/V projection split on channels and the softmax scale folded into K."""

    def __init__(self, attn: FASA, input_norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_heads, self.dim_head = attn.num_heads, attn.dim_head
        self.q = copy.deepcopy(attn.q)
        self.kv = copy.deepcopy(attn.kv)
        self.local_mixer = copy.deepcopy(attn.local_mixer)
        self.mixer = copy.deepcopy(attn.mixer)
        self.pool = copy.deepcopy(attn.pool)
        fuse_sequential_conv_bn(self.pool)
        self.fold_affine = isinstance(self.pool, nn.Identity)
        if self.fold_affine:  # every reader of the norm is a 1x1 conv
            _affine_into_pointwise(input_norm, self.q)
            _affine_into_pointwise(input_norm, self.kv)
        self.batched_heads = False  # see xnnpack_form()
        channels = self.q.out_channels
        self.kv.weight.data[:channels] *= attn.scale
        if self.kv.bias is not None:
            self.kv.bias.data[:channels] *= attn.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        q_local = self.q(x)
        if self.batched_heads:
            global_feat = self._attend_batched_heads(q_local, self.kv(self.pool(x)))
        else:
            q = q_local.reshape(-1, self.num_heads, self.dim_head, h * w).transpose(-1, -2)
            k, v = self.kv(self.pool(x)).chunk(2, dim=1)
            k = k.reshape(-1, self.num_heads, self.dim_head, k.shape[2] * k.shape[3])
            v = v.reshape(-1, self.num_heads, self.dim_head, v.shape[2] * v.shape[3])
            attn = torch.softmax(q @ k, dim=-1)
            global_feat = (attn @ v.transpose(-1, -2)).transpose(-1, -2).reshape(-1, c, h, w)
        return self.mixer(F.silu(self.local_mixer(q_local)) * F.silu(global_feat))

    def _attend_batched_heads(self, q_local: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Heads folded into the batch: rank-3 ``bmm`` and channel slices instead of rank-4 matmuls and a split.

        torch.export decomposes a rank-4 matmul into expand + bmm; ExecuTorch runs those expands (and the split)
        as portable copy kernels outside XNNPACK.
        """
        b, c, h, w = q_local.shape
        q = q_local.reshape(b * self.num_heads, self.dim_head, h * w).transpose(1, 2)
        tokens = kv.shape[2] * kv.shape[3]
        k = kv[:, :c].reshape(b * self.num_heads, self.dim_head, tokens)
        v = kv[:, c:].reshape(b * self.num_heads, self.dim_head, tokens)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)
        return torch.bmm(attn, v.transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)


class DeployConvFFN(nn.Module):
    """ConvFFN with the inner residual and the BatchNorm folded into the depthwise conv."""

    def __init__(self, ffn: ConvFFN, input_norm: nn.GroupNorm) -> None:
        super().__init__()
        self.fc1 = copy.deepcopy(ffn.fc1)
        _affine_into_pointwise(input_norm, self.fc1)
        self.act = nn.GELU()
        depthwise = _add_identity(ffn.dwconv) if ffn.stride == 1 else ffn.dwconv
        self.dwconv = fuse_conv_bn_eval(depthwise, ffn.bn)
        self.fc2 = copy.deepcopy(ffn.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dwconv(self.act(self.fc1(x))))


class DeployFATBlock(nn.Module):
    """A FAT block in deploy form (see module docstring)."""

    def __init__(self, block: FATBlock) -> None:
        super().__init__()
        self.cpe = _add_identity(block.cpe)
        self.attn = DeployFASA(block.attn, block.norm1)
        self.norm1 = ChannelSpatialNorm.from_group_norm(block.norm1, keep_affine=not self.attn.fold_affine)
        self.norm2 = ChannelSpatialNorm.from_group_norm(block.norm2, keep_affine=False)
        self.ffn = DeployConvFFN(block.ffn, block.norm2)
        self.downsample = copy.deepcopy(block.downsample)
        fuse_sequential_conv_bn(self.downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe(x)
        x = x + self.attn(self.norm1(x))
        return self.downsample(x) + self.ffn(self.norm2(x))


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every SyncBatchNorm (official training code) with an equivalent BatchNorm2d."""
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(model, name, bn.train(child.training))
        else:
            convert_sync_batchnorm(child)
    return model


def fuse_sequential_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d inside an ``nn.Sequential``."""
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
    return model


@runtime_checkable
class HasDeployForm(Protocol):
    """A module that can turn into an export-friendly module computing the same function."""

    def deploy_form(self) -> nn.Module: ...


def apply_deploy_forms(model: nn.Module) -> nn.Module:
    """Let every module that knows an export-friendly form of itself (peers' rewrites) switch to it."""
    for name, child in list(model.named_children()):
        apply_deploy_forms(child)
        if isinstance(child, HasDeployForm):
            setattr(model, name, child.deploy_form())
    return model


def densify_grouped_pointwise(model: nn.Module) -> nn.Module:
    """Grouped, non-depthwise 1x1 convs become dense convs with a block-diagonal weight (exact).

    Older TFLite runtimes have no grouped CONV_2D; the extra MACs of a 1x1 are negligible.
    """
    for name, child in list(model.named_children()):
        if (isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1) and child.groups > 1
                and child.groups != child.in_channels):
            stride = (child.stride[0], child.stride[1])
            dense = nn.Conv2d(child.in_channels, child.out_channels, 1, stride, 0, bias=child.bias is not None)
            blocks = child.weight.detach()[:, :, 0, 0].chunk(child.groups)
            diagonal = torch.block_diag(*blocks)  # type: ignore[no-untyped-call]  # torch leaves it untyped
            dense.weight.data.copy_(diagonal.reshape_as(dense.weight))
            if child.bias is not None and dense.bias is not None:
                dense.bias.data.copy_(child.bias.detach())
            setattr(model, name, dense)
        else:
            densify_grouped_pointwise(child)
    return model


def _fold_fat(model: FAT) -> None:
    for layer in model.layers:
        blocks = cast(list[FATBlock], layer.blocks)
        layer.blocks = nn.ModuleList(DeployFATBlock(block) for block in blocks)
    norm, stem_norm = model.norm, model.patch_embed.layernorm
    if not isinstance(norm, nn.GroupNorm) or not isinstance(stem_norm, nn.GroupNorm):
        raise TypeError("to_deploy takes a faithful FAT (GroupNorm layers), not one already in deploy form")
    if isinstance(model.head, nn.Linear):
        _affine_into_pointwise(norm, model.head)
        model.norm = ChannelSpatialNorm.from_group_norm(norm, keep_affine=False)
    else:
        model.norm = ChannelSpatialNorm.from_group_norm(norm)
    model.patch_embed.layernorm = ChannelSpatialNorm.from_group_norm(stem_norm)


@torch.no_grad()
def to_deploy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in deploy form; ``model`` itself is left unchanged."""
    deployed = copy.deepcopy(model).eval()
    convert_sync_batchnorm(deployed)
    fuse_sequential_conv_bn(deployed)
    apply_deploy_forms(deployed)
    densify_grouped_pointwise(deployed)
    if isinstance(deployed, FAT):
        _fold_fat(deployed)
    for parameter in deployed.parameters():
        parameter.requires_grad_(False)
    return deployed.eval()


class PixelNormalize(nn.Module):
    """(x - mean) / std per channel inside the graph, for image inputs in [0, 1] (Core ML ImageType, MediaPipe)."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std).reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) * self.inv_std)
