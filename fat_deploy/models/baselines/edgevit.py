"""EdgeViT-XXS / XS (Pan et al., ECCV 2022, arXiv:2205.03436),
written from the official code (github.com/saic-fi/edgevit, ``src/edgevit.py``) and the paper.

Module names follow the official code (saic-fi/edgevit) so its state_dict layout carries over. The official repo
releases no weights. The input size is fixed (224 by default): the sparse attention's local propagation is a
depthwise transposed convolution whose deploy form is built for the feature size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fat_deploy.models.baselines._layers import FixedInputSize, GeluMlp


class ChannelsLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Non-overlapping strided conv (k = s = patch) followed by LayerNorm over channels."""

    def __init__(self, in_chs: int, out_chs: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, patch, patch)
        self.norm = ChannelsLayerNorm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class LocalAgg(nn.Module):
    """Local aggregation: depthwise positional conv, then a dw5x5 token mixer and a conv MLP, each pre-BN."""

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = GeluMlp(dim, int(dim * mlp_ratio), pointwise_conv=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x))))
        return x + self.mlp(self.norm2(x))


class TiledDepthwiseUpsample(nn.Module):
    """Deploy form of a depthwise ``ConvTranspose2d`` with kernel == stride == r (exact).

    Each input pixel becomes an r x r patch scaled by the channel's kernel: nearest upsampling times a
    constant tiled kernel, plus the bias. Only Resize, Mul and Add, which every runtime supports (TFLite's
    TRANSPOSE_CONV has no groups).
    """

    tiled_kernel: torch.Tensor
    bias: torch.Tensor

    def __init__(self, conv: nn.ConvTranspose2d, in_size: tuple[int, int]) -> None:
        super().__init__()
        ratio = conv.stride[0]
        if conv.kernel_size != (ratio, ratio) or conv.stride != (ratio, ratio) or conv.groups != conv.in_channels:
            raise ValueError("only depthwise transposed convs with kernel == stride have this rewrite")
        self.ratio = ratio
        kernel = conv.weight.detach()[:, 0]  # (C, r, r)
        tiled = kernel.repeat(1, in_size[0], in_size[1]).unsqueeze(0)  # (1, C, h*r, w*r)
        self.register_buffer("tiled_kernel", tiled.clone())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(kernel.shape[0])
        self.register_buffer("bias", bias.reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=float(self.ratio), mode="nearest")
        return up * self.tiled_kernel + self.bias


class GlobalSparseAttn(nn.Module):
    """Self-attention among every r-th token, propagated back to full resolution by a dw transposed conv."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, feature_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.sr = sr_ratio
        self.sampled_size = feature_size // sr_ratio
        if sr_ratio > 1:
            self.sampler = nn.AvgPool2d(1, sr_ratio)
            self.LocalProp: nn.Module = nn.ConvTranspose2d(dim, dim, sr_ratio, stride=sr_ratio, groups=dim)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, _, channels = x.shape
        if self.sr > 1:
            x = self.sampler(x.transpose(1, 2).reshape(batch, channels, height, width))
            x = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(x).reshape(batch, -1, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(batch, -1, channels)
        if self.sr > 1:
            x = x.permute(0, 2, 1).reshape(batch, channels, height // self.sr, width // self.sr)
            x = self.LocalProp(x).reshape(batch, channels, -1).permute(0, 2, 1)
            x = self.norm(x)
        return self.proj(x)

    def deploy_form(self) -> GlobalSparseAttn:
        """Swap the depthwise transposed conv for its exact upsample-and-tile form."""
        if self.sr > 1 and isinstance(self.LocalProp, nn.ConvTranspose2d):
            size = (self.sampled_size, self.sampled_size)
            self.LocalProp = TiledDepthwiseUpsample(self.LocalProp, size)
        return self


class SelfAttn(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, feature_size: int) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GlobalSparseAttn(dim, num_heads, sr_ratio, feature_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = GeluMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(self.norm1(tokens), height, width)
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class LGLBlock(nn.Module):
    """Local-Global-Local block: local aggregation (when r > 1), then sparse global self-attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, feature_size: int) -> None:
        super().__init__()
        self.LocalAgg = LocalAgg(dim, mlp_ratio) if sr_ratio > 1 else nn.Identity()
        self.SelfAttn = SelfAttn(dim, num_heads, mlp_ratio, sr_ratio, feature_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SelfAttn(self.LocalAgg(x))


class EdgeViT(FixedInputSize, nn.Module):
    display_name = "EdgeViT"

    def __init__(
        self,
        depths: tuple[int, ...],
        embed_dims: tuple[int, ...],
        head_dim: int,
        sr_ratios: tuple[int, ...] = (4, 2, 2, 1),
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
    ) -> None:
        super().__init__()
        self.set_input_size(img_size)
        self.num_classes = num_classes
        previous, feature_size = in_chans, img_size
        for index, (depth, dim, ratio) in enumerate(zip(depths, embed_dims, sr_ratios), start=1):
            patch = 4 if index == 1 else 2
            feature_size //= patch
            setattr(self, f"patch_embed{index}", PatchEmbed(previous, dim, patch))
            blocks = [LGLBlock(dim, dim // head_dim, mlp_ratio, ratio, feature_size) for _ in range(depth)]
            setattr(self, f"blocks{index}", nn.ModuleList(blocks))
            previous = dim
        self.num_stages = len(depths)
        self.num_features = previous
        self.norm = nn.BatchNorm2d(previous)
        self.head = nn.Linear(previous, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{index}")(x)
            for block in getattr(self, f"blocks{index}"):
                x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).flatten(2).mean(-1))


EDGEVIT_CONFIGS = {
    # name: (depths, channels, head_dim)
    "edgevit_xxs": ((1, 1, 3, 2), (36, 72, 144, 288), 36),
    "edgevit_xs": ((1, 1, 3, 1), (48, 96, 240, 384), 48),
}


def build(variant: str, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224) -> EdgeViT:
    depths, dims, head_dim = EDGEVIT_CONFIGS[variant]
    return EdgeViT(depths, dims, head_dim, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
