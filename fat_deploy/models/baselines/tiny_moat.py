"""tiny-MOAT-0 / -2 (Yang et al., ICLR 2023, arXiv:2210.01820),
written from the official configs (github.com/google-research/deeplab2, ``model/encoder/moat.py``:
``tiny_moat0_config``, ``tiny_moat2_config``).

The official model is TF2/Keras (google-research/deeplab2); its public checkpoints are TF files trained at 256,
so here the weights are random unless a user supplies a PyTorch state_dict in this module's layout. Classification
attention is global (the window is the whole feature map), so the input size is fixed (224, the paper table's size)
and the 2-D relative position bias is precomputed as one (heads, N, N) constant in the deploy form.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fat_deploy.models.baselines._layers import FixedInputSize, GeluMlp


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc = GeluMlp(channels, hidden, pointwise_conv=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True)).sigmoid()


class MBConv(nn.Module):
    """Pre-norm inverted residual: BN, 1x1 expand, BN, GELU, dw3x3, BN, GELU, [SE], 1x1 shrink; pooled shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int, se_ratio: float | None) -> None:
        super().__init__()
        hidden = out_chs * expansion
        shortcut: list[nn.Module] = []
        if stride > 1:
            shortcut.append(nn.AvgPool2d(2, stride))
        if in_chs != out_chs:
            shortcut.append(nn.Conv2d(in_chs, out_chs, 1))
        self.shortcut = nn.Sequential(*shortcut)
        self.pre_norm = nn.BatchNorm2d(in_chs)
        self.expand = nn.Sequential(nn.Conv2d(in_chs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.GELU())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.GELU()
        )
        self.se = SqueezeExcite(hidden, max(1, int(out_chs * se_ratio))) if se_ratio else nn.Identity()
        self.shrink = nn.Conv2d(hidden, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)
        x = self.shrink(self.se(self.depthwise(self.expand(self.pre_norm(x)))))
        return residual + x


def relative_position_index(size: int) -> torch.Tensor:
    """(N, N) index into a flattened (2P-1, 2P-1) table for every pair of positions on a P x P grid."""
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    delta = coords[:, :, None] - coords[:, None, :] + (size - 1)  # (2, N, N), each in [0, 2P-2]
    return delta[0] * (2 * size - 1) + delta[1]


class RelativeAttention(nn.Module):
    precomputed_bias: torch.Tensor | None
    relative_index: torch.Tensor
    """Global multi-head self-attention with a learned 2-D relative position bias (one table per head)."""

    def __init__(self, dim: int, head_size: int, feature_size: int) -> None:
        super().__init__()
        self.num_heads = dim // head_size
        self.scale = head_size**-0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.feature_size = feature_size
        span = 2 * feature_size - 1
        self.relative_bias_table = nn.Parameter(torch.zeros(self.num_heads, span, span))
        nn.init.trunc_normal_(self.relative_bias_table, std=0.02)
        self.register_buffer("relative_index", relative_position_index(feature_size), persistent=False)
        self.register_buffer("precomputed_bias", None)

    def position_bias(self) -> torch.Tensor:
        if self.precomputed_bias is not None:
            return self.precomputed_bias
        return self.relative_bias_table.flatten(1)[:, self.relative_index]  # (heads, N, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, heads, channels // heads).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attn = ((q * self.scale) @ k.transpose(-2, -1) + self.position_bias()).softmax(dim=-1)
        return self.o((attn @ v).transpose(1, 2).reshape(batch, tokens, channels))

    def deploy_form(self) -> RelativeAttention:
        """Precompute the (heads, N, N) bias: the table lookup becomes one constant."""
        if self.precomputed_bias is None:
            self.precomputed_bias = self.position_bias().detach().clone()
            del self.relative_bias_table, self.relative_index  # the table is not needed any more
        return self


class MOATBlock(nn.Module):
    """MBConv (no SE) followed by pre-LN global relative attention, each with its residual; no MLP."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int, head_size: int, feature_size: int):
        super().__init__()
        self.mbconv = MBConv(in_chs, out_chs, stride, expansion, se_ratio=None)
        self.norm = nn.LayerNorm(out_chs, eps=1e-5)
        self.attn = RelativeAttention(out_chs, head_size, feature_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mbconv(x)
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(self.norm(tokens))
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class TinyMOAT(FixedInputSize, nn.Module):
    display_name = "tiny-MOAT"

    def __init__(
        self,
        stem: tuple[int, int],
        hidden: tuple[int, int, int, int],
        blocks: tuple[int, int, int, int] = (2, 3, 7, 2),
        expansion: int = 4,
        se_ratio: float = 0.25,
        head_size: int = 32,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
    ) -> None:
        super().__init__()
        self.set_input_size(img_size)
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem[0], 3, 2, 1), nn.BatchNorm2d(stem[0]), nn.GELU(),
            nn.Conv2d(stem[0], stem[1], 3, 1, 1),
        )
        stages: list[nn.Module] = []
        previous, feature_size = stem[1], img_size // 2
        for index, (depth, width) in enumerate(zip(blocks, hidden)):
            feature_size //= 2
            layers: list[nn.Module] = []
            for block in range(depth):
                stride = 2 if block == 0 else 1
                if index < 2:
                    layers.append(MBConv(previous, width, stride, expansion, se_ratio))
                else:
                    layers.append(MOATBlock(previous, width, stride, expansion, head_size, feature_size))
                previous = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.num_features = previous
        self.norm = nn.LayerNorm(previous, eps=1e-5)
        self.head = nn.Linear(previous, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stages(self.stem(x))
        return self.head(self.norm(x.mean((2, 3))))


TINY_MOAT_CONFIGS = {
    "tiny_moat_0": ((32, 32), (32, 64, 128, 256)),
    "tiny_moat_2": ((56, 56), (56, 112, 224, 448)),
}


def build(variant: str, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224) -> TinyMOAT:
    stem, hidden = TINY_MOAT_CONFIGS[variant]
    return TinyMOAT(stem, hidden, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
