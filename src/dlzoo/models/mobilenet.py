"""MobileNets: networks built from depthwise-separable convolutions.

A depthwise-separable conv is a 3x3 depthwise conv (one filter per channel, ``groups`` =
channels) followed by a 1x1 pointwise conv that mixes channels: about 8-9 times fewer
multiply-adds than a full 3x3 conv. ``width_mult`` scales every layer's channel count.
The variants:

- ``mobilenet_v1`` (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks
  for Mobile Vision Applications", table 1): a 32-filter 3x3/2 conv, 13 depthwise-separable
  blocks (each conv followed by batch norm and ReLU) of 64, 128, 128, 256, 256, 512 x 6, 1024,
  1024 channels, stride 2 at the first 128, 256, 512 and 1024, global pooling, dense: 4.2M
  parameters. For images smaller than 64 pixels (CIFAR, MNIST) the first conv uses stride 1,
  so a 32x32 image ends as a 2x2 map instead of being pooled away.
- ``mobilenet_small``: the first notebook set's own small MobileNet for CIFAR-10 (the notes
  report 64.9%). The notes describe only "a few depthwise-separable blocks", so the layout is
  a reconstruction: a 32-filter stem and five blocks of 64, 128, 128, 256, 256 channels (0.14M
  parameters).
- ``mobilenet_v2`` (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks"): torchvision's layout and names (``features.N``, ``classifier`` = dropout +
  linear), so ``model.pretrained=true`` loads its ImageNet weights. It stays torchvision-exact
  by default (it works at any image size; a 32x32 image ends as a 1x1 map); ``stem="cifar"``
  asks for stride 1 in the first conv, which keeps 4x more of small images at 4x the compute
  and changes no weight shape, so pretrained weights load either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.models.base import Classifier, Dropout
from dlzoo.registry import MODELS

SMALL_IMAGE = 64
"""Images with a side below this get a stride-1 first conv in MobileNet v1."""


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """conv (no bias, "same" padding) -> batch norm -> activation, indexed 0, 1, 2 as torchvision's
    ``Conv2dNormActivation``."""
    padding = (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        activation(inplace=True),
    )


def _check_settings(name: str, in_shape: tuple[int, ...], width_mult: float) -> None:
    if len(in_shape) != 3:
        raise ValueError(f"{name} needs images (C, H, W), got input shape {in_shape}")
    if width_mult <= 0:
        raise ValueError(f"{name}: width_mult must be > 0 (1.0 is the paper's network), got {width_mult}")


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-BN-ReLU (stride here), then 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = conv_bn_act(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = conv_bn_act(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


# (output channels, stride) of each depthwise-separable block.
MOBILENET_V1 = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *[(512, 1)] * 5,
    (1024, 2),
    (1024, 1),
]
MOBILENET_SMALL = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1)]


class MobileNetV1(Classifier):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        blocks: list[tuple[int, int]],
        width_mult: float = 1.0,
        stem_channels: int = 32,
    ) -> None:
        super().__init__()
        _check_settings("MobileNet", in_shape, width_mult)

        def width(channels: int) -> int:
            return max(1, round(channels * width_mult))

        stem_stride = 1 if min(in_shape[1:]) < SMALL_IMAGE else 2
        layers: list[nn.Module] = [conv_bn_act(in_shape[0], width(stem_channels), 3, stem_stride)]
        channels = width(stem_channels)
        for out_channels, stride in blocks:
            layers.append(DepthwiseSeparable(channels, width(out_channels), stride))
            channels = width(out_channels)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)


def round_channels(channels: float, divisor: int = 8) -> int:
    """``channels`` to the nearest multiple of ``divisor``, but never 10% below it (TF reference rule)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class InvertedResidual(nn.Module):
    """1x1 expansion (t times, ReLU6) -> 3x3 depthwise (ReLU6) -> linear 1x1 projection;
    the input is added back when the shape is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_act(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


# The paper's table 2: (expansion t, output channels c, repeats n, stride of the first s).
MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2)]
MOBILENET_V2 += [(6, 320, 1, 1)]


class MobileNetV2(Classifier):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        width_mult: float = 1.0,
        stem: str = "imagenet",
        dropout_rate: float = 0.2,
    ) -> None:
        super().__init__()
        _check_settings("MobileNet v2", in_shape, width_mult)
        if stem not in ("imagenet", "cifar"):
            raise ValueError(
                f"mobilenet_v2 stem must be imagenet (stride 2) or cifar (stride 1), got {stem!r}"
            )
        channels = round_channels(32 * width_mult)
        layers: list[nn.Module] = [
            conv_bn_act(in_shape[0], channels, 3, 2 if stem == "imagenet" else 1, activation=nn.ReLU6)
        ]
        for expansion, out_channels, repeats, first_stride in MOBILENET_V2:
            out_channels = round_channels(out_channels * width_mult)
            for index in range(repeats):
                layers.append(
                    InvertedResidual(channels, out_channels, first_stride if index == 0 else 1, expansion)
                )
                channels = out_channels
        last_channels = round_channels(1280 * max(1.0, width_mult))  # never narrower than 1280
        layers.append(conv_bn_act(channels, last_channels, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(Dropout(dropout_rate), nn.Linear(last_channels, num_classes))
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)  # (B, 1280)


@MODELS.register("mobilenet_v1")
def mobilenet_v1(num_classes: int, in_shape: tuple[int, ...], width_mult: float = 1.0) -> MobileNetV1:
    return MobileNetV1(in_shape, num_classes, MOBILENET_V1, width_mult)


@MODELS.register("mobilenet_small")
def mobilenet_small(num_classes: int, in_shape: tuple[int, ...], width_mult: float = 1.0) -> MobileNetV1:
    return MobileNetV1(in_shape, num_classes, MOBILENET_SMALL, width_mult)


@MODELS.register("mobilenet_v2", torchvision_weights="MobileNet_V2_Weights")
def mobilenet_v2(
    num_classes: int,
    in_shape: tuple[int, ...],
    width_mult: float = 1.0,
    stem: str = "imagenet",
    dropout_rate: float = 0.2,
) -> MobileNetV2:
    return MobileNetV2(in_shape, num_classes, width_mult, stem, dropout_rate)
