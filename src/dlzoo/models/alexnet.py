"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep Convolutional
Neural Networks").

Five convolutions with max-pooling, then three dense layers with dropout. The variants:

- ``alexnet``: torchvision's single-tower version (Krizhevsky 2014, "One weird trick for
  parallelizing convolutional neural networks": 64, 192, 384, 256, 256 filters, no LRN) with
  its module names (``features``, ``avgpool``, ``classifier``), so ``model.pretrained=true``
  loads its ImageNet weights. The 11x11/4 conv and three 3x3/2 max-pools need images of at
  least 63x63 pixels; the adaptive pooling to 6x6 makes any larger size work.
- ``alexnet8``: the TF2 course's AlexNet8 for 32x32 CIFAR-10: 3x3 convs of 96, 256 (each
  followed by batch norm instead of LRN), 384, 384 and 256 filters, three 3x3/2 max-pools,
  then dense 2048, 2048 with dropout. A 32x32 image ends as a 2x2 map, a 28x28 one as 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from dlzoo.models.base import Classifier, Dropout, flat_size
from dlzoo.models.vgg import dense_head
from dlzoo.registry import MODELS


def _check_image_shape(name: str, in_shape: tuple[int, ...]) -> None:
    if len(in_shape) != 3:
        raise ValueError(f"{name} needs images (C, H, W), got input shape {in_shape}")


class AlexNet(Classifier):
    """torchvision's AlexNet: ``classifier(flatten(avgpool(features(x))))``."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, dropout_rate: float = 0.5) -> None:
        super().__init__()
        _check_image_shape("AlexNet", in_shape)
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[0], 64, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            Dropout(dropout_rate),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            Dropout(dropout_rate),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)  # (B, 9216)


class AlexNet8(Classifier):
    """The TF2 course's AlexNet8: valid 3x3 convs with batch norm, then same-padded ones."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, dropout_rate: float = 0.5) -> None:
        super().__init__()
        _check_image_shape("AlexNet8", in_shape)
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[0], 96, 3),
            nn.BatchNorm2d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(96, 256, 3),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(256, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Flatten(),
        )
        width = flat_size(self.features, in_shape)  # 1024 for 32x32 images, 256 for 28x28
        self.classifier = dense_head(width, 2048, num_classes, dropout_rate)


@MODELS.register("alexnet", min_size=63, torchvision_weights="AlexNet_Weights")
def alexnet(num_classes: int, in_shape: tuple[int, ...], dropout_rate: float = 0.5) -> AlexNet:
    return AlexNet(in_shape, num_classes, dropout_rate)


@MODELS.register("alexnet8", min_size=21)
def alexnet8(num_classes: int, in_shape: tuple[int, ...], dropout_rate: float = 0.5) -> AlexNet8:
    return AlexNet8(in_shape, num_classes, dropout_rate)
