"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2).

A 3x3 conv with 16 filters, then three stages of ``n`` basic blocks with 16, 32 and 64
filters (the second and third stages halve the map with a stride-2 first block), global
average pooling and a linear head: 6n + 2 weighted layers. The variants differ only in n:
``resnet20`` (n=3, 0.27M parameters), ``resnet32`` (5), ``resnet44`` (7), ``resnet56`` (9,
0.85M), ``resnet110`` (18, 1.7M). Shortcuts that change shape are the paper's option A
(subsample and zero-pad the channels: no parameters) by default, or option B (a 1x1
projection conv with batch norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.models.base import Classifier, make_activation
from dlzoo.registry import MODELS


class PadShortcut(nn.Module):
    """Option A: take every other pixel and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN, plus the shortcut, then the activation."""

    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: str, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = make_activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            if shortcut == "A":
                self.shortcut = PadShortcut(channels - in_channels)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class CifarResNet(Classifier):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        blocks_per_stage: int,
        shortcut: str = "A",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"ResNet needs images (C, H, W), got input shape {in_shape}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be A (zero-padding) or B (projection), got {shortcut!r}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_shape[0], 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            make_activation(activation),
        ]
        channels = 16
        for stage, width in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, width, stride, shortcut, activation))
                channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():  # He init for the convolutions, as the paper
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def _register(name: str, blocks_per_stage: int) -> None:
    def factory(
        num_classes: int, in_shape: tuple[int, ...], shortcut: str = "A", activation: str = "relu"
    ) -> CifarResNet:
        return CifarResNet(in_shape, num_classes, blocks_per_stage, shortcut, activation)

    factory.__name__ = name
    MODELS.register(name)(factory)


for _name, _n in (("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("resnet110", 18)):
    _register(_name, _n)
