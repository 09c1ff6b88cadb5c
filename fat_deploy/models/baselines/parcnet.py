"""ParC-Net-S (Zhang et al., ECCV 2022; repo "EdgeFormer", arXiv:2203.03952),
from the official code (github.com/hkzhang91/ParC-Net, ``cvnets/models/classification/edgeformer.py``, ``scale_s``).

MobileNetV2 stages, then three "outer frame" stages of gcc_ca_mf blocks: channel halves mixed by position-aware
circular convolutions (vertical-then-horizontal and horizontal-then-vertical) whose kernels are bilinearly resized
at run time to the feature size, plus an FFN with channel attention.

Deploy form (exact at the export size, ``img_size``): the run-time-built kernels and position embeddings are baked
into static depthwise convolutions, and the grouped (non-depthwise) 1x1 convolution becomes a dense block-diagonal
one (older TFLite runtimes lack grouped CONV_2D).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fat_deploy.models.baselines._layers import FixedInputSize, conv_norm_act, make_divisible
from fat_deploy.models.baselines._parc import HORIZONTAL, VERTICAL, circular_extend, kernel_shape, resize_along


class InvertedResidual(nn.Module):
    """cvnets MobileNetV2 block: 1x1 expand, dw3x3, 1x1 project (BN after each, swish on the first two)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int = 4) -> None:
        super().__init__()
        hidden = make_divisible(in_chs * expand_ratio, 8)
        self.block = nn.Sequential(
            conv_norm_act(in_chs, hidden, 1, act=nn.SiLU),
            conv_norm_act(hidden, hidden, 3, stride, groups=hidden, act=nn.SiLU),
            conv_norm_act(hidden, out_chs, 1),
        )
        self.use_residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class GlobalCircularConv(nn.Module):
    """Depthwise circular conv over a whole axis; the meta kernel is resized to the feature size at run time."""

    def __init__(self, dim: int, direction: str, meta_size: int) -> None:
        super().__init__()
        self.direction = direction
        self.meta_kernel = nn.Parameter(torch.randn(dim, 1, *kernel_shape(meta_size, direction)) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2] if self.direction == VERTICAL else x.shape[3]
        kernel = resize_along(self.meta_kernel, size, self.direction)
        return F.conv2d(circular_extend(x, self.direction), kernel, groups=x.shape[1])

    def baked(self, feature_size: int) -> BakedCircularConv:
        """The same operator with its kernel fixed for ``feature_size`` (a static weight for export)."""
        return BakedCircularConv(resize_along(self.meta_kernel.detach(), feature_size, self.direction), self.direction)


class BakedCircularConv(nn.Module):
    """Deploy form of :class:`GlobalCircularConv`: a static depthwise conv on the circularly extended input."""

    def __init__(self, kernel: torch.Tensor, direction: str) -> None:
        super().__init__()
        self.direction = direction
        channels = kernel.shape[0]
        self.conv = nn.Conv2d(channels, channels, (int(kernel.shape[2]), int(kernel.shape[3])), groups=channels, bias=False)
        self.conv.weight.data.copy_(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(circular_extend(x, self.direction))


class PositionEmbedding(nn.Module):
    """Learned (1, C, K, 1) / (1, C, 1, K) embedding, resized to the feature size and broadcast over the other axis."""

    def __init__(self, dim: int, direction: str, meta_size: int) -> None:
        super().__init__()
        self.direction = direction
        self.pe = nn.Parameter(torch.randn(1, dim, *kernel_shape(meta_size, direction)) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2] if self.direction == VERTICAL else x.shape[3]
        return x + resize_along(self.pe, size, self.direction)

    def baked(self, feature_size: int) -> BakedPositionEmbedding:
        return BakedPositionEmbedding(resize_along(self.pe.detach(), feature_size, self.direction))


class BakedPositionEmbedding(nn.Module):
    pe: torch.Tensor

    def __init__(self, pe: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pe", pe.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe


class ParCHalf(nn.Module):
    """One channel half: [+PE] BN, circular conv along one axis, [+PE], circular conv along the other, residual."""

    def __init__(self, dim: int, first: str, meta_size: int, with_pe: bool, feature_size: int) -> None:
        super().__init__()
        second = HORIZONTAL if first == VERTICAL else VERTICAL
        self.feature_size = feature_size
        self.pe1: nn.Module = PositionEmbedding(dim, first, meta_size) if with_pe else nn.Identity()
        self.norm = nn.BatchNorm2d(dim)
        self.conv1: nn.Module = GlobalCircularConv(dim, first, meta_size)
        self.pe2: nn.Module = PositionEmbedding(dim, second, meta_size) if with_pe else nn.Identity()
        self.conv2: nn.Module = GlobalCircularConv(dim, second, meta_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.pe2(self.conv1(self.norm(self.pe1(x)))))

    def deploy_form(self) -> ParCHalf:
        """Bake kernels and position embeddings for the export feature size."""
        for name in ("pe1", "conv1", "pe2", "conv2"):
            module = getattr(self, name)
            if isinstance(module, (GlobalCircularConv, PositionEmbedding)):
                setattr(self, name, module.baked(self.feature_size))
        return self


class ChannelAttention(nn.Module):
    """GAP, 1x1 reduce (/16), BN, Hardswish, 1x1 expand, BN, Hardsigmoid; multiplies its input."""

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            conv_norm_act(dim, dim // reduction, 1, act=nn.Hardswish),
            conv_norm_act(dim // reduction, dim, 1, act=nn.Hardsigmoid),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class GCCBlock(nn.Module):
    """gcc_ca_mf block: two ParC halves (H-then-W and W-then-H), then x + CA(FFN(x))."""

    def __init__(self, dim: int, ffn_dim: int, meta_size: int, with_pe: bool, feature_size: int) -> None:
        super().__init__()
        half = dim // 2
        self.split_at = half
        self.branch_h = ParCHalf(half, VERTICAL, meta_size, with_pe, feature_size)
        self.branch_w = ParCHalf(dim - half, HORIZONTAL, meta_size, with_pe, feature_size)
        self.ffn = nn.Sequential(
            nn.BatchNorm2d(dim), nn.Conv2d(dim, ffn_dim, 1), nn.Hardswish(), nn.Conv2d(ffn_dim, dim, 1)
        )
        self.ca = ChannelAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.branch_h(x[:, : self.split_at]), self.branch_w(x[:, self.split_at :])), dim=1)
        return x + self.ca(self.ffn(x))


class OuterFrame(nn.Module):
    """Widen (grouped 3x3 + 1x1), gcc blocks, BN, narrow (grouped 1x1), fuse with the input (3x3 on the concat)."""

    def __init__(self, dim: int, global_dim: int, ffn_dim: int, depth: int, meta_size: int, feature_size: int):
        super().__init__()
        self.dim_adaptive = nn.Sequential(
            conv_norm_act(dim, global_dim, 3, groups=dim, act=nn.SiLU),
            nn.Conv2d(global_dim, global_dim, 1, bias=False),
        )
        blocks = [GCCBlock(global_dim, ffn_dim, meta_size, index == 0, feature_size) for index in range(depth)]
        self.global_rep = nn.Sequential(*blocks, nn.BatchNorm2d(global_dim))
        self.channel_adaptive = conv_norm_act(global_dim, dim, 1, groups=dim, act=nn.SiLU)
        self.local_global_fusion = conv_norm_act(2 * dim, dim, 3, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global_features = self.channel_adaptive(self.global_rep(self.dim_adaptive(x)))
        return self.local_global_fusion(torch.cat((global_features, x), dim=1))


class ParCNet(FixedInputSize, nn.Module):
    display_name = "ParC-Net"

    # (out channels, global width, ffn width, gcc blocks) for layers 3-5
    FRAMES = ((96, 192, 384, 2), (128, 256, 512, 4), (160, 320, 640, 3))

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 256, dropout: float = 0.2):
        super().__init__()
        self.set_input_size(img_size)
        self.num_classes = num_classes
        self.conv_1 = conv_norm_act(in_chans, 16, 3, 2, act=nn.SiLU)
        self.layer_1 = InvertedResidual(16, 32, 1)
        self.layer_2 = nn.Sequential(InvertedResidual(32, 64, 2), InvertedResidual(64, 64, 1), InvertedResidual(64, 64, 1))
        previous, meta_size = 64, 256 // 4  # meta kernels are sized for the 256 training resolution
        layers = []
        for out_chs, global_dim, ffn_dim, depth in self.FRAMES:
            meta_size //= 2
            feature_size = img_size // (256 // meta_size)
            layers.append(nn.Sequential(
                InvertedResidual(previous, out_chs, 2),
                OuterFrame(out_chs, global_dim, ffn_dim, depth, meta_size, feature_size),
            ))
            previous = out_chs
        self.layer_3, self.layer_4, self.layer_5 = layers
        self.num_features = min(previous * 4, 960)
        self.conv_1x1_exp = conv_norm_act(previous, self.num_features, 1, act=nn.SiLU)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)  # the deploy form bakes kernels for img_size; eager and deploy accept the same inputs
        x = self.layer_2(self.layer_1(self.conv_1(x)))
        x = self.conv_1x1_exp(self.layer_5(self.layer_4(self.layer_3(x))))
        return self.classifier(self.dropout(x.mean((2, 3))))


def build(variant: str = "parcnet_s", num_classes: int = 1000, in_chans: int = 3, img_size: int = 256) -> ParCNet:
    return ParCNet(num_classes=num_classes, in_chans=in_chans, img_size=img_size)
