"""ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition").

Each block adds its input (the shortcut) to what its convolutions compute. The variants:

- ``resnet20`` ... ``resnet110``: the paper's CIFAR ResNets (section 4.2). A 3x3 conv with 16
  filters, then three stages of ``n`` basic blocks with 16, 32 and 64 filters (the second and
  third stages halve the map with a stride-2 first block), global average pooling and a linear
  head: 6n + 2 weighted layers. They differ only in n: ``resnet20`` (n=3, 0.27M parameters),
  ``resnet32`` (5), ``resnet44`` (7), ``resnet56`` (9, 0.85M), ``resnet110`` (18, 1.7M).
  Shortcuts that change shape are the paper's option A (subsample and zero-pad the channels:
  no parameters) by default, or option B (a 1x1 projection conv with batch norm).
- ``resnet18``, ``resnet34`` (basic blocks of two 3x3 convs), ``resnet50``, ``resnet101``,
  ``resnet152`` (bottleneck blocks 1x1 -> 3x3 -> 1x1 with 4x wider output, the stride on the
  3x3 conv: torchvision's "v1.5"): the paper's ImageNet networks (table 1) with torchvision's
  names (``conv1 ... layer4, fc``, blocks ``conv1/bn1/.../downsample``) and initialisation, so
  ``model.pretrained=true`` loads its ImageNet weights. Four stages of 64, 128, 256, 512
  filters. ``stem="imagenet"`` (default) is the 7x7/2 conv and 3x3/2 max-pool (4x smaller
  maps); ``stem="cifar"`` a 3x3/1 conv and no max-pool, the usual CIFAR ResNet-18 and the TF2
  course's (pretrained weights need the ImageNet stem).
- ``resnet_exercise``: the translated model zoo's residual-block exercise for MNIST (its
  notebook reaches 97.91%): a block with an identity shortcut (1x1 conv to 4 channels, 3x3
  conv back), a block with a 1x1/2 projection shortcut (3x3/2 conv to 4 channels, 1x1 conv
  to 8), and a linear head on the 14x14x8 map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.models.base import Classifier, flat_size, make_activation
from dlzoo.registry import MODELS


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """A strided 1x1 conv and batch norm: option B, and torchvision's ``downsample``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


def downsample_for(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The identity while the shape stays, else a 1x1 projection (torchvision's ``downsample``)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return projection(in_channels, out_channels, stride)


def he_init_convs(model: nn.Module) -> None:
    """He initialisation (fan-out) of every conv, as the paper and torchvision."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


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
                self.shortcut = projection(in_channels, channels, stride)

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
        he_init_convs(self)


class ResidualBlock(nn.Module):
    """``relu(residual(x) + downsample(x))``: what torchvision's blocks share. Subclasses build
    the residual branch, then ``relu`` and ``downsample`` (see ``downsample_for``)."""

    expansion = 1
    """Output channels per ``channels`` argument (4 for the bottleneck)."""
    relu: nn.Module
    downsample: nn.Module

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.residual(x) + self.downsample(x))


class TorchvisionBasicBlock(ResidualBlock):
    """conv-BN-ReLU, conv-BN (3x3 and 3x3 for ResNet-18/34; the stride on the first conv),
    named as torchvision's ``BasicBlock``."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        kernel_sizes: tuple[int, int] = (3, 3),
        mid_channels: int | None = None,
    ) -> None:
        super().__init__()
        mid_channels = mid_channels or channels
        first, second = kernel_sizes
        self.conv1 = nn.Conv2d(in_channels, mid_channels, first, stride, padding=first // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, channels, second, padding=second // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample_for(in_channels, channels, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(ResidualBlock):
    """1x1 conv to ``channels``, 3x3 conv (the stride here: v1.5), 1x1 conv to 4 x ``channels``,
    each with batch norm; named as torchvision's ``Bottleneck``."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample_for(in_channels, channels * self.expansion, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResNet(Classifier):
    """torchvision's ResNet: stem, ``layer1`` ... ``layer4``, global average pooling, ``fc``."""

    classifier_name = "fc"

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        block: type[TorchvisionBasicBlock | Bottleneck],
        blocks_per_stage: tuple[int, int, int, int],
        stem: str = "imagenet",
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"ResNet needs images (C, H, W), got input shape {in_shape}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(
                f"ResNet stem must be imagenet (7x7/2 conv + max-pool) or cifar (3x3/1 conv), got {stem!r}"
            )
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_shape[0], 64, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_shape[0], 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        in_channels = 64
        stages = []
        for index, (width, repeats) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
            blocks = []
            for position in range(repeats):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(in_channels, width, stride))
                in_channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        he_init_convs(self)  # batch norm keeps weight 1, bias 0; no zero-init of the last one

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # (B, 512) or (B, 2048)


class ResNetExercise(Classifier):
    """The model zoo's exercise: an identity-shortcut block, a projection-shortcut block, dense."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"resnet_exercise needs images (C, H, W), got input shape {in_shape}")
        channels = in_shape[0]
        self.features = nn.Sequential(
            TorchvisionBasicBlock(channels, channels, kernel_sizes=(1, 3), mid_channels=4),  # (B, C, H, W)
            TorchvisionBasicBlock(
                channels, 8, stride=2, kernel_sizes=(3, 1), mid_channels=4
            ),  # (B, 8, H/2, W/2)
            nn.Flatten(),
        )
        self.classifier = nn.Linear(flat_size(self.features, in_shape), num_classes)


def _register(name: str, blocks_per_stage: int) -> None:
    def factory(
        num_classes: int, in_shape: tuple[int, ...], shortcut: str = "A", activation: str = "relu"
    ) -> CifarResNet:
        return CifarResNet(in_shape, num_classes, blocks_per_stage, shortcut, activation)

    factory.__name__ = name
    MODELS.register(name)(factory)


for _name, _n in (("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("resnet110", 18)):
    _register(_name, _n)


# The paper's table 1: the block and how many of it in each of the four stages.
RESNET_LAYOUTS: dict[int, tuple[type[TorchvisionBasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (TorchvisionBasicBlock, (2, 2, 2, 2)),
    34: (TorchvisionBasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _register_imagenet(depth: int) -> None:
    block, blocks_per_stage = RESNET_LAYOUTS[depth]

    def factory(num_classes: int, in_shape: tuple[int, ...], stem: str = "imagenet") -> ResNet:
        return ResNet(in_shape, num_classes, block, blocks_per_stage, stem)

    factory.__name__ = f"resnet{depth}"
    MODELS.register(f"resnet{depth}", torchvision_weights=f"ResNet{depth}_Weights")(factory)


for _depth in RESNET_LAYOUTS:
    _register_imagenet(_depth)


@MODELS.register("resnet_exercise")
def resnet_exercise(num_classes: int, in_shape: tuple[int, ...]) -> ResNetExercise:
    return ResNetExercise(in_shape, num_classes)
