"""Network in Network (Lin, Chen & Yan 2014), the CIFAR-10 version of the model zoo.

Three "mlpconv" blocks: a spatial conv followed by two 1x1 convs (a small MLP slid over
every position), each conv followed by ReLU:

- 5x5 192 -> 1x1 160 -> 1x1 96, max-pool 3/2, dropout 0.5
- 5x5 192 -> 1x1 192 -> 1x1 192, average-pool 3/2, dropout 0.5
- 3x3 192 -> 1x1 192 -> 1x1 classes, global average pooling

The last 1x1 conv and the global average pooling are the paper's replacement for dense
layers. Here the head is that 1x1 conv applied after the pooling, as an ``nn.Linear`` (the
shared ``Classifier`` head): a 1x1 conv and an average commute, both being linear. That
only holds without a nonlinearity between them, so the class maps get no ReLU (the zoo's
version applies one before pooling, which also keeps logits from going negative).
"""

from __future__ import annotations

from torch import nn

from dlzoo.models.base import Classifier, Dropout
from dlzoo.registry import MODELS


def mlpconv(in_channels: int, widths: tuple[int, int, int], kernel_size: int) -> list[nn.Module]:
    """A ``kernel_size`` conv ('same') then two 1x1 convs, each followed by ReLU."""
    first, second, third = widths
    return [
        nn.Conv2d(in_channels, first, kernel_size, padding=kernel_size // 2),
        nn.ReLU(),
        nn.Conv2d(first, second, 1),
        nn.ReLU(),
        nn.Conv2d(second, third, 1),
        nn.ReLU(),
    ]


class NetworkInNetwork(Classifier):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, dropout_rate: float = 0.5) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"NiN needs images (C, H, W), got input shape {in_shape}")
        self.features = nn.Sequential(
            *mlpconv(in_shape[0], (192, 160, 96), 5),
            nn.MaxPool2d(3, stride=2, padding=1),  # 32 -> 16
            Dropout(dropout_rate),
            *mlpconv(96, (192, 192, 192), 5),
            nn.AvgPool2d(3, stride=2, padding=1),  # 16 -> 8
            Dropout(dropout_rate),
            nn.Conv2d(192, 192, 3, padding=1),  # the third mlpconv; its last 1x1 conv is the head
            nn.ReLU(),
            nn.Conv2d(192, 192, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(192, num_classes)


@MODELS.register("nin")
def nin(num_classes: int, in_shape: tuple[int, ...], dropout_rate: float = 0.5) -> NetworkInNetwork:
    return NetworkInNetwork(in_shape, num_classes, dropout_rate)
