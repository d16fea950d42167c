"""Inception networks (Szegedy et al. 2015, "Going deeper with convolutions"; 2016, "Rethinking the
Inception Architecture for Computer Vision").

An Inception module runs parallel branches over the same input (1x1; 1x1 -> 3x3; 1x1 -> 5x5;
3x3 max-pool -> 1x1) and concatenates them along channels. The variants differ in size and in
whose layout they follow:

- ``inception10``: the TF2 course's Inception10 for CIFAR: a 16-filter 3x3 conv, two blocks of
  two InceptionBlks (every branch has c channels, so a block outputs 4c; c = 16 then 32; the
  first InceptionBlk of each block puts stride 2 on its 1x1 convs), global average pooling.
- ``inception_small``: the first notebook set's own small Inception net for CIFAR-10 (the notes
  report 73.5%). The notes only describe it (a stem conv, GoogLeNet-style modules, max-pool
  between stages, global pooling), so the widths here are a reconstruction (0.87M parameters).
- ``googlenet``: torchvision's GoogLeNet (Inception v1), same module names, without the
  auxiliary classifiers; ``torchvision_weights`` enables ``model.pretrained=true``.
- ``inception_v3``: torchvision's Inception v3, same module names, without ``AuxLogits``;
  needs images of at least 75x75.

The two torchvision families keep torchvision's quirks so its weights load unchanged: GoogLeNet's
"5x5" branch is a 3x3 conv (torchvision issue 906), and every conv is followed by batch norm
(eps 1e-3). torchvision's pretrained GoogLeNet and Inception v3 also set ``transform_input``:
they were trained on images scaled to [-1, 1] and convert ImageNet-normalised inputs to that
scale first. Here ``transform_input`` is off by default, because dlzoo standardises inputs
with the training split's own statistics and fine-tuning re-estimates the batch-norm
statistics anyway; set ``model.transform_input = True`` on a 3-channel model to reproduce
torchvision's pretrained model exactly (its published extra tensors, the auxiliary
classifiers, are ignored when loading).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.models.base import Classifier, Dropout
from dlzoo.registry import MODELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBN(nn.Module):
    """conv (no bias) -> batch norm -> ReLU; torchvision's ``BasicConv2d`` names and eps (Keras's too)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class _CatChannels(torch.autograd.Function):
    """``torch.cat(parts, 1)`` whose backward hands each part a dense gradient.

    cat's own backward gives each branch a channel slice of its gradient, which in channels-last
    is strided, and the branches' batch-norm backward and bfloat16 ReLU backward run several
    times slower on strided gradients than on dense ones; one copy per branch costs far less."""

    @staticmethod
    def forward(ctx, *parts: torch.Tensor) -> torch.Tensor:
        ctx.channels = [part.shape[1] for part in parts]
        return torch.cat(parts, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # preserve_format: a channel slice of a channels-last gradient comes out dense channels-last
        return tuple(part.clone(memory_format=torch.preserve_format) for part in grad.split(ctx.channels, 1))


def cat_channels(parts: list[torch.Tensor]) -> torch.Tensor:
    """The branches concatenated along channels; in training, with dense gradients per branch."""
    if torch.is_grad_enabled() and any(part.requires_grad for part in parts):
        return _CatChannels.apply(*parts)
    return torch.cat(parts, 1)


class InceptionModule(nn.Module):
    """GoogLeNet's module: 1x1 | 1x1 -> 3x3 | 1x1 -> wide | 3x3 max-pool -> 1x1, concatenated.

    ``wide_kernel`` is the paper's 5 (torchvision's GoogLeNet: 3). ``stride`` goes on the 1x1
    convs, as in the TF2 course's InceptionBlk; GoogLeNet itself always uses 1.
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, int, int, int, int, int],
        wide_kernel: int = 5,
        stride: int = 1,
    ) -> None:
        super().__init__()
        ch1x1, ch3x3_reduce, ch3x3, wide_reduce, wide, pool_proj = widths
        self.out_channels = ch1x1 + ch3x3 + wide + pool_proj
        self.branch1 = ConvBN(in_channels, ch1x1, 1, stride)
        self.branch2 = nn.Sequential(
            ConvBN(in_channels, ch3x3_reduce, 1, stride), ConvBN(ch3x3_reduce, ch3x3, 3, padding=1)
        )
        self.branch3 = nn.Sequential(
            ConvBN(in_channels, wide_reduce, 1, stride),
            ConvBN(wide_reduce, wide, wide_kernel, padding=wide_kernel // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), ConvBN(in_channels, pool_proj, 1, stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cat_channels([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)])


def _check_image_shape(name: str, in_shape: tuple[int, ...]) -> None:
    if len(in_shape) != 3:
        raise ValueError(f"{name} needs images (C, H, W), got input shape {in_shape}")


class Inception10(Classifier):
    """The TF2 course's Inception10: ConvBNRelu(16), ``num_blocks`` x 2 InceptionBlks, pooling, dense."""

    def __init__(
        self, in_shape: tuple[int, ...], num_classes: int, num_blocks: int = 2, channels: int = 16
    ) -> None:
        super().__init__()
        _check_image_shape("Inception10", in_shape)
        layers: list[nn.Module] = [ConvBN(in_shape[0], channels, 3, padding=1)]
        in_channels = channels
        for _ in range(num_blocks):
            for stride in (2, 1):
                block = InceptionModule(in_channels, (channels,) * 6, wide_kernel=5, stride=stride)
                layers.append(block)
                in_channels = block.out_channels
            channels *= 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)


# Modules as (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj); "M" is a 3x3/2 max-pool.
INCEPTION_SMALL = [
    "M",  # pool the stem's map first: the modules run at 16x16 and 8x8 (CIFAR), a quarter of the cost
    (32, 48, 64, 8, 16, 16),
    (64, 64, 128, 16, 32, 32),
    "M",
    (96, 96, 192, 16, 48, 48),
    (128, 128, 256, 24, 64, 64),
]


class InceptionSmall(Classifier):
    """A 64-filter 3x3 stem, then Inception modules and max-pools as ``layout`` says, pooling, dense."""

    def __init__(
        self, in_shape: tuple[int, ...], num_classes: int, layout: list, stem_channels: int = 64
    ) -> None:
        super().__init__()
        _check_image_shape("inception_small", in_shape)
        layers: list[nn.Module] = [ConvBN(in_shape[0], stem_channels, 3, padding=1)]
        channels = stem_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            else:
                layers.append(InceptionModule(channels, item))
                channels = layers[-1].out_channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)


def imagenet_to_half_range(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised RGB -> (pixel - 0.5) / 0.5, the scale torchvision's ported weights expect."""
    scale = x.new_tensor([s / 0.5 for s in IMAGENET_STD]).view(1, 3, 1, 1)
    shift = x.new_tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN]).view(1, 3, 1, 1)
    return x * scale + shift


class TorchvisionInception(Classifier):
    """Shared by GoogLeNet and Inception v3: the layers named in ``body`` run in order, then
    global average pooling and dropout; ``fc`` is the head, as in torchvision."""

    classifier_name = "fc"
    body: tuple[str, ...] = ()

    def __init__(self, in_shape: tuple[int, ...], transform_input: bool) -> None:
        super().__init__()
        _check_image_shape(type(self).__name__, in_shape)
        if transform_input and in_shape[0] != 3:
            raise ValueError(f"transform_input needs RGB images (3 channels), got {in_shape[0]}")
        self.transform_input = transform_input

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform_input:
            x = imagenet_to_half_range(x)
        for name in self.body:
            x = getattr(self, name)(x)
        return torch.flatten(self.dropout(self.avgpool(x)), 1)  # (B, 1024) or (B, 2048)

    def _init_normal(self, std: float) -> None:
        """torchvision's initialisation: conv and linear weights N(0, std^2). (torchvision truncates
        at +-2, which at std <= 0.1 cuts nothing, and its truncated sampler is 3x slower.)"""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, std=std)


# GoogLeNet after the stem, the paper's table 1: module widths as in INCEPTION_SMALL;
# an int k is a k x k / 2 max-pool (ceil mode).
GOOGLENET_BODY = [
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", 3),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", 2),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
]


class GoogLeNet(TorchvisionInception):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        dropout_rate: float = 0.2,
        transform_input: bool = False,
    ) -> None:
        super().__init__(in_shape, transform_input)
        self.conv1 = ConvBN(in_shape[0], 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBN(64, 64, 1)
        self.conv3 = ConvBN(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        channels = 192
        for name, item in GOOGLENET_BODY:
            if isinstance(item, int):
                self.add_module(name, nn.MaxPool2d(item, stride=2, ceil_mode=True))
            else:
                self.add_module(name, InceptionModule(channels, item, wide_kernel=3))
                channels = getattr(self, name).out_channels
        self.body = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", *(n for n, _ in GOOGLENET_BODY))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(dropout_rate)
        self.fc = nn.Linear(channels, num_classes)
        self._init_normal(std=0.01)


class InceptionA(nn.Module):
    """35x35 grid: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg-pool -> 1x1."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return cat_channels([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool])


class InceptionB(nn.Module):
    """35 -> 17 grid reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max-pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return cat_channels([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, 3, stride=2)])


class InceptionC(nn.Module):
    """17x17 grid, 7x7 convs factorised into 1x7 and 7x1: 1x1 | 1x1 -> 1x7 -> 7x1 |
    1x1 -> (7x1 -> 1x7) x 2 | 3x3 avg-pool -> 1x1."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, column = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, **row)
        self.branch7x7_3 = ConvBN(c7, 192, **column)
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, **column)
        self.branch7x7dbl_3 = ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = ConvBN(c7, c7, **column)
        self.branch7x7dbl_5 = ConvBN(c7, 192, **row)
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for index in range(2, 6):
            branch7x7dbl = getattr(self, f"branch7x7dbl_{index}")(branch7x7dbl)
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return cat_channels([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool])


class InceptionD(nn.Module):
    """17 -> 8 grid reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | 3x3/2 max-pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for index in range(2, 5):
            branch7x7x3 = getattr(self, f"branch7x7x3_{index}")(branch7x7x3)
        return cat_channels([branch3x3, branch7x7x3, F.max_pool2d(x, 3, stride=2)])


class InceptionE(nn.Module):
    """8x8 grid, widened: 1x1 | 1x1 -> (1x3 and 3x1) | 1x1 -> 3x3 -> (1x3 and 3x1) | avg-pool -> 1x1."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        parts = [
            self.branch1x1(x),
            self.branch3x3_2a(branch3x3),
            self.branch3x3_2b(branch3x3),
            self.branch3x3dbl_3a(branch3x3dbl),
            self.branch3x3dbl_3b(branch3x3dbl),
            self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1)),
        ]
        return cat_channels(parts)


class InceptionV3(TorchvisionInception):
    body = (
        *("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3"),
        *("maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d"),
        *("Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"),
    )

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        dropout_rate: float = 0.5,
        transform_input: bool = False,
    ) -> None:
        super().__init__(in_shape, transform_input)
        self.Conv2d_1a_3x3 = ConvBN(in_shape[0], 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)  # -> 73
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2)  # -> 35
        self.Mixed_5b = InceptionA(192, pool_features=32)  # -> 256 channels
        self.Mixed_5c = InceptionA(256, pool_features=64)  # -> 288
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)  # -> 768 x 17 x 17
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)  # -> 1280 x 8 x 8
        self.Mixed_7b = InceptionE(1280)  # -> 2048
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(dropout_rate)
        self.fc = nn.Linear(2048, num_classes)
        self._init_normal(std=0.1)


@MODELS.register("inception10")
def inception10(num_classes: int, in_shape: tuple[int, ...]) -> Inception10:
    return Inception10(in_shape, num_classes)


@MODELS.register("inception_small")
def inception_small(num_classes: int, in_shape: tuple[int, ...]) -> InceptionSmall:
    return InceptionSmall(in_shape, num_classes, INCEPTION_SMALL)


@MODELS.register("googlenet", min_size=15, torchvision_weights="GoogLeNet_Weights")
def googlenet(num_classes: int, in_shape: tuple[int, ...], dropout_rate: float = 0.2) -> GoogLeNet:
    return GoogLeNet(in_shape, num_classes, dropout_rate)


@MODELS.register("inception_v3", min_size=75, torchvision_weights="Inception_V3_Weights")
def inception_v3(num_classes: int, in_shape: tuple[int, ...], dropout_rate: float = 0.5) -> InceptionV3:
    return InceptionV3(in_shape, num_classes, dropout_rate)
