"""ParC-ResNet50 (Zhang et al., ECCV 2022, arXiv:2203.03952),
from the official code (github.com/hkzhang91/ParC-Net, ``ParC_ConvNets/ParC_resnet50.py``).

torchvision's ResNet-50 with the 3x3 convolution of the last three layer3 blocks and the last layer4 block
replaced by a ParC block (global circular convolutions, kernel = feature size: 14 and 7 at 224). The learned
position embeddings have the kernel's size, so the input is fixed at 224. No public weights were found.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models.resnet import Bottleneck, ResNet

from fat_deploy.models.baselines._layers import FixedInputSize
from fat_deploy.models.baselines._parc import HORIZONTAL, VERTICAL, ParCOperator


class ParCBottleneck(nn.Module):
    """Bottleneck whose 3x3 conv is split into a vertical and a horizontal global ParC operator (half the channels each)."""

    def __init__(self, block: Bottleneck, feature_size: int) -> None:
        super().__init__()
        width = block.conv1.out_channels
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.parc_H = ParCOperator(width // 2, VERTICAL, feature_size)
        self.parc_W = ParCOperator(width - width // 2, HORIZONTAL, feature_size)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.relu = nn.ReLU(inplace=True)
        self.downsample = block.downsample
        self.split = width // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = torch.cat((self.parc_H(out[:, : self.split]), self.parc_W(out[:, self.split :])), dim=1)
        out = self.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ParCResNet50(FixedInputSize, ResNet):  # type: ignore[misc]  # torchvision ships no type information
    display_name = "ParC-ResNet50"

    def __init__(self, num_classes: int = 1000, img_size: int = 224, parc_from: tuple[int, int] = (3, 2)) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=max(num_classes, 1))
        self.set_input_size(img_size)
        self.num_classes = num_classes
        for layer, first, stride in ((self.layer3, parc_from[0], 16), (self.layer4, parc_from[1], 32)):
            for index in range(first, len(layer)):
                layer[index] = ParCBottleneck(layer[index], img_size // stride)
        if num_classes == 0:
            self.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return super().forward(x)


def build(variant: str = "parc_resnet50", num_classes: int = 1000, img_size: int = 224) -> ParCResNet50:
    return ParCResNet50(num_classes=num_classes, img_size=img_size)
