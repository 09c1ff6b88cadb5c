"""The FAT family (Fully Adaptive Transformer, Fan et al., NeurIPS 2023).

Computes exactly what the official ``qhfan/FAT`` classification model computes (see
github.com/qhfan/FAT, ``classification/models``; paper arXiv:2306.00396), with the same parameter names so that an official
checkpoint loads with strict key matching. NCHW throughout; works at any input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers.drop import DropPath

from fat_deploy.models.spec import ModelSpec, register_model


@dataclass(frozen=True)
class FATConfig:
    """Hyper-parameters of one FAT variant (names follow the official YAML files)."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    drop_path_rate: float
    kernel_sizes: tuple[int, int, int, int] = (3, 5, 7, 9)
    window_sizes: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_kernel_sizes: tuple[int, int, int, int] = (5, 5, 5, 5)
    mlp_ratios: tuple[float, float, float, float] = (4, 4, 4, 4)


def _depthwise(channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size, stride, kernel_size // 2, groups=channels)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1)


class BasicBlock(nn.Module):
    """Stem unit: 3x3 conv (with bias) -> BatchNorm -> ReLU, kept as ``conv.{0,1,2}``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PatchEmbedding(nn.Module):
    """Convolutional stem, stride 4, ending in a 1x1 conv and GroupNorm(1, C)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = BasicBlock(in_channels, out_channels // 2, 2)
        self.conv2 = BasicBlock(out_channels // 2, out_channels, 2)
        self.conv3 = BasicBlock(out_channels, out_channels, 1)
        self.conv4 = BasicBlock(out_channels, out_channels, 1)
        self.conv5 = _pointwise(out_channels, out_channels)
        self.layernorm: nn.Module = nn.GroupNorm(1, out_channels)  # deploy form: ChannelSpatialNorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.layernorm(self.conv5(x))


def refined_downsample(dim: int, window_size: int, kernel_size: int = 5) -> nn.Module:
    """FASA's K/V pooling: log2(ws) x (DW k5 s2 -> BN), with a 1x1 conv between repeats."""
    repeats = window_size.bit_length() - 1
    if 2**repeats != window_size:
        raise ValueError(f"window_size must be a power of two, got {window_size}")
    if repeats == 0:
        return nn.Identity()
    block = nn.Sequential()
    for index in range(repeats):
        block.add_module(f"conv{index}", _depthwise(dim, kernel_size, 2))
        block.add_module(f"bn{index}", nn.BatchNorm2d(dim))
        if index != repeats - 1:
            block.add_module(f"linear{index}", _pointwise(dim, dim))
    return block


class FASA(nn.Module):
    """Fully Adaptive Self-Attention: global attention over pooled K/V, gated by a local branch.

    out = mixer(SiLU(local_mixer(q)) * SiLU(attn(q, K, V))), as the official code computes it
    (the global->local gate is unused there, so it is absent here).
    """

    def __init__(self, dim: int, kernel_size: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.q = _pointwise(dim, dim)
        self.kv = _pointwise(dim, dim * 2)
        self.local_mixer = _depthwise(dim, kernel_size)
        self.mixer = _pointwise(dim, dim)
        self.num_heads = num_heads
        self.dim_head = dim // num_heads
        self.pool = refined_downsample(dim, window_size)
        self.window_size = window_size
        self.scale = self.dim_head**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q_local = self.q(x)
        # Heads are contiguous channel groups; tokens are the flattened h*w grid.
        q = q_local.reshape(b, self.num_heads, self.dim_head, h * w).transpose(-1, -2)
        kv = self.kv(self.pool(x)).flatten(2)  # (b, 2c, H*W)
        k, v = kv.reshape(b, 2, self.num_heads, self.dim_head, -1).unbind(1)  # (b, m, d, HW)
        attn = torch.softmax(self.scale * (q @ k), dim=-1)
        global_feat = (attn @ v.transpose(-1, -2)).transpose(-1, -2).reshape(b, c, h, w)
        local_feat = F.silu(self.local_mixer(q_local))
        return self.mixer(local_feat * F.silu(global_feat))


class ConvFFN(nn.Module):
    """1x1 expand -> GELU -> DW k5 (inner residual when stride 1) -> BN -> 1x1 project."""

    def __init__(
        self, in_channels: int, hidden_channels: int, kernel_size: int, stride: int, out_channels: int
    ) -> None:
        super().__init__()
        self.stride = stride
        self.fc1 = _pointwise(in_channels, hidden_channels)
        self.act = nn.GELU()
        self.dwconv = _depthwise(hidden_channels, kernel_size, stride)
        self.bn = nn.BatchNorm2d(hidden_channels)
        self.fc2 = _pointwise(hidden_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        x = x + self.dwconv(x) if self.stride == 1 else self.dwconv(x)
        return self.fc2(self.bn(x))


class FATBlock(nn.Module):
    """CPE -> FASA -> ConvFFN; the last block of stages 1-3 halves the grid and widens."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        kernel_size: int,
        num_heads: int,
        window_size: int,
        mlp_kernel_size: int,
        mlp_ratio: float,
        stride: int,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.cpe = _depthwise(dim, kernel_size)
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = FASA(dim, kernel_size, num_heads, window_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.GroupNorm(1, dim)
        if stride == 1:
            self.downsample: nn.Module = nn.Identity()
        else:
            self.downsample = nn.Sequential(
                _depthwise(dim, mlp_kernel_size, stride),
                nn.BatchNorm2d(dim),
                _pointwise(dim, out_dim),
            )
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio), mlp_kernel_size, stride, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return self.downsample(x) + self.drop_path(self.ffn(self.norm2(x)))


class FATLayer(nn.Module):
    """One stage: ``depth`` blocks at one width; the last one may downsample."""

    def __init__(
        self, cfg: FATConfig, stage: int, out_dim: int, downsample: bool, drop_paths: list[float]
    ) -> None:
        super().__init__()
        dim = cfg.embed_dims[stage]
        depth = cfg.depths[stage]
        self.blocks = nn.ModuleList(
            FATBlock(
                dim,
                out_dim if index == depth - 1 else dim,
                cfg.kernel_sizes[stage],
                cfg.num_heads[stage],
                cfg.window_sizes[stage],
                cfg.mlp_kernel_sizes[stage],
                cfg.mlp_ratios[stage],
                2 if (downsample and index == depth - 1) else 1,
                drop_paths[index],
            )
            for index in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class FAT(nn.Module):
    """Fully Adaptive Transformer classifier."""

    def __init__(self, cfg: FATConfig, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.patch_embed = PatchEmbedding(in_chans, cfg.embed_dims[0])
        total = sum(cfg.depths)  # drop-path rate rises linearly over all blocks (training only)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        start = 0
        for stage, depth in enumerate(cfg.depths):
            last = stage == len(cfg.depths) - 1
            out_dim = cfg.embed_dims[stage if last else stage + 1]
            self.layers.append(FATLayer(cfg, stage, out_dim, not last, rates[start : start + depth]))
            start += depth
        self.norm: nn.Module = nn.GroupNorm(1, cfg.embed_dims[-1])  # deploy form: ChannelSpatialNorm
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head: nn.Module = (
            nn.Linear(cfg.embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised features (b, embed_dims[-1])."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.avgpool(self.norm(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


OFFICIAL = "official code (qhfan/FAT classification/configs/{}.yaml)"
DERIVED = "derived from the paper's table, not an official configuration ({})"

FAT_CONFIGS: dict[str, tuple[FATConfig, str, str, bool]] = {
    # name: (config, paper label, source, official)
    "fat_b0": (FATConfig((32, 80, 160, 256), (2, 2, 6, 2), (2, 5, 10, 16), 0.05), "FAT-B0", OFFICIAL.format("FAT_b0"), True),
    "fat_b1": (FATConfig((48, 96, 192, 384), (2, 2, 6, 2), (3, 6, 12, 24), 0.10), "FAT-B1", OFFICIAL.format("FAT_b1"), True),
    "fat_b2": (FATConfig((64, 128, 256, 512), (2, 2, 6, 2), (2, 4, 8, 16), 0.10), "FAT-B2", OFFICIAL.format("FAT_b2"), True),
    "fat_b3": (FATConfig((64, 128, 256, 512), (4, 4, 16, 4), (2, 4, 8, 16), 0.15), "FAT-B3",
              OFFICIAL.format("FAT_b3"), True),
    "fat_b3_st": (FATConfig((96, 192, 384, 768), (2, 2, 6, 2), (3, 6, 12, 24), 0.15), "FAT-B3-ST",
                 DERIVED.format("Swin-T layout"), False),
    "fat_b4": (FATConfig((96, 192, 384, 768), (2, 2, 18, 2), (3, 6, 12, 24), 0.15), "FAT-B4",
              DERIVED.format("Swin-S layout"), False),
    "fat_b5": (FATConfig((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), 0.15), "FAT-B5",
              DERIVED.format("Swin-B layout"), False),
}


def _builder(cfg: FATConfig):  # type: ignore[no-untyped-def]
    def build(num_classes: int = 1000, in_chans: int = 3) -> FAT:
        return FAT(cfg, num_classes=num_classes, in_chans=in_chans)

    return build


for _name, (_cfg, _label, _source, _official) in FAT_CONFIGS.items():
    register_model(
        ModelSpec(
            name=_name,
            builder=_builder(_cfg),
            family="fat",
            input_size=224,
            source=_source,
            official=_official,
            paper_label=_label,
            resize_size=256,
            stem="patch_embed",
        )
    )
