"""VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition").

Stacks of 3x3 convolutions (same padding) separated by 2x2 max-pools, then dense layers. The
depths are the paper's configurations A (``vgg11``), B (``vgg13``), D (``vgg16``) and E
(``vgg19``); ``_bn`` adds batch norm after every conv (Ioffe & Szegedy 2015). Two heads:

- ``vgg11`` ... ``vgg19_bn``: torchvision's layout and names (``features``, ``avgpool`` to
  7x7, ``classifier`` = 4096, 4096 with dropout), so ``model.pretrained=true`` loads its
  ImageNet weights. Five pools need images of at least 32x32 pixels (a 1x1 map, which the
  adaptive pooling repeats to 7x7); the 7x7x512 -> 4096 layer alone holds 103M parameters.
- ``vgg11_cifar`` ... ``vgg19_cifar``: the CIFAR-10 VGG of the TF2 course (its VGG16) and the
  notes' "deeper VGG + batch norm": the same conv stacks with batch norm (``batch_norm``),
  dropout after every pooling stage (``dropout_rate``, 0.2 as the course), global pooling of
  the final map (1x1 for 32x32 images) and a head of dense 512, 512 with dropout: 15M
  parameters for ``vgg16_cifar``. The pools round up (Keras's "same" pooling), so any image
  size works (28x28 ends as 1x1 too).
- ``vgg_small`` and ``vgg_small_deep``: the first notebook set's own CIFAR-10 VGGs, in the
  same CIFAR layout at a quarter of the width: ``vgg_small`` is three stages of two 3x3 convs
  (32, 64, 128 filters; the notes' "vgg", without batch norm by default), ``vgg_small_deep``
  four stages of 32, 64, 128 (x3) and 256 (x3) filters with batch norm (the notes' "deeper
  VGG + batch norm"). The head is dense 512, 512 as above. The notes give the idea (stacked
  3x3 convs, pooling, a deeper stack with batch norm), not a layer table: the widths are ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dlzoo.models.base import Classifier, Dropout
from dlzoo.registry import MODELS

# Conv widths in order; "M" is a 2x2/2 max-pool (followed by dropout in the CIFAR variants).
VGG_LAYOUTS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", *[256] * 4, "M", *[512] * 4, "M", *[512] * 4, "M"],
}
SMALL_LAYOUTS: dict[str, tuple[list[int | str], bool]] = {
    "vgg_small": ([32, 32, "M", 64, 64, "M", 128, 128, "M"], False),
    "vgg_small_deep": ([32, 32, "M", 64, 64, "M", 128, 128, 128, "M", 256, 256, 256, "M"], True),
}
"""The notes' own CIFAR VGGs: (layout, batch norm by default)."""


def conv_stack(
    layout: list[int | str], in_channels: int, batch_norm: bool, pool: Callable[[], list[nn.Module]]
) -> list[nn.Module]:
    """conv3x3 [-> batch norm] -> ReLU for every width in ``layout``, ``pool()``'s modules for "M"
    (indexed as torchvision's ``features`` when ``pool`` gives one max-pool)."""
    layers: list[nn.Module] = []
    for item in layout:
        if item == "M":
            layers += pool()
            continue
        layers.append(nn.Conv2d(in_channels, item, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU(inplace=True))
        in_channels = item
    return layers


def dense_head(in_features: int, width: int, num_classes: int, dropout_rate: float) -> nn.Sequential:
    """dense ``width`` -> ReLU -> dropout, twice, then the class logits."""
    return nn.Sequential(
        nn.Linear(in_features, width),
        nn.ReLU(inplace=True),
        Dropout(dropout_rate),
        nn.Linear(width, width),
        nn.ReLU(inplace=True),
        Dropout(dropout_rate),
        nn.Linear(width, num_classes),
    )


def init_like_torchvision(model: nn.Module) -> None:
    """torchvision's VGG initialisation: He (fan-out) convs, N(0, 0.01^2) dense layers, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)


def _check_image_shape(name: str, in_shape: tuple[int, ...]) -> None:
    if len(in_shape) != 3:
        raise ValueError(f"{name} needs images (C, H, W), got input shape {in_shape}")


class VGG(Classifier):
    """torchvision's VGG: ``classifier(flatten(avgpool(features(x))))``."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        layout: list[int | str],
        batch_norm: bool,
        dropout_rate: float = 0.5,
    ) -> None:
        super().__init__()
        _check_image_shape("VGG", in_shape)
        self.features = nn.Sequential(
            *conv_stack(layout, in_shape[0], batch_norm, lambda: [nn.MaxPool2d(2, stride=2)])
        )
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = dense_head(512 * 7 * 7, 4096, num_classes, dropout_rate)
        init_like_torchvision(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)  # (B, 25088)


class CifarVGG(Classifier):
    """The course's CIFAR VGG: conv stages with dropout after each pool, global pooling, dense 512 x 2."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        layout: list[int | str],
        batch_norm: bool = True,
        dropout_rate: float = 0.2,
    ) -> None:
        super().__init__()
        _check_image_shape("VGG (CIFAR)", in_shape)

        def pool() -> list[nn.Module]:
            return [nn.MaxPool2d(2, stride=2, ceil_mode=True), Dropout(dropout_rate)]

        self.features = nn.Sequential(
            *conv_stack(layout, in_shape[0], batch_norm, pool), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        widths = [item for item in layout if item != "M"]
        self.classifier = dense_head(int(widths[-1]), 512, num_classes, dropout_rate)
        init_like_torchvision(self)


def _register(name: str, layout: list[int | str]) -> None:
    depth = name.removeprefix("vgg")

    def torchvision_factory(batch_norm: bool) -> Callable[..., VGG]:
        def factory(num_classes: int, in_shape: tuple[int, ...], dropout_rate: float = 0.5) -> VGG:
            return VGG(in_shape, num_classes, layout, batch_norm, dropout_rate)

        return factory

    def cifar_factory(
        num_classes: int, in_shape: tuple[int, ...], dropout_rate: float = 0.2, batch_norm: bool = True
    ) -> CifarVGG:
        return CifarVGG(in_shape, num_classes, layout, batch_norm, dropout_rate)

    MODELS.register(name, min_size=32, torchvision_weights=f"VGG{depth}_Weights")(torchvision_factory(False))
    MODELS.register(f"{name}_bn", min_size=32, torchvision_weights=f"VGG{depth}_BN_Weights")(
        torchvision_factory(True)
    )
    MODELS.register(f"{name}_cifar")(cifar_factory)


def _register_small(name: str, layout: list[int | str], default_batch_norm: bool) -> None:
    def factory(
        num_classes: int,
        in_shape: tuple[int, ...],
        dropout_rate: float = 0.2,
        batch_norm: bool = default_batch_norm,
    ) -> CifarVGG:
        return CifarVGG(in_shape, num_classes, layout, batch_norm, dropout_rate)

    factory.__name__ = name
    MODELS.register(name)(factory)


for _name, _layout in VGG_LAYOUTS.items():
    _register(_name, _layout)
for _name, (_layout, _batch_norm) in SMALL_LAYOUTS.items():
    _register_small(_name, _layout, _batch_norm)
