"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition").

conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> dense 120 -> dense 84 -> classes.
The paper fed 32x32 inputs; smaller inputs get "same" padding where a valid
convolution would shrink the map too far (28x28 MNIST pads the first conv, the
classic trick; 8x8 digits pad both). Variants differ in activation and pooling:
``lenet5`` uses ReLU and max pooling (the modern reading); ``lenet5_classic``
uses tanh and average pooling as in the paper.
"""

from __future__ import annotations

from torch import nn

from dlzoo.models.base import Classifier, Dropout, flat_size, make_activation
from dlzoo.registry import MODELS


class LeNet5(Classifier):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        activation: str = "relu",
        pool: type[nn.Module] = nn.MaxPool2d,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"LeNet-5 needs images (C, H, W), got input shape {in_shape}")
        channels, side = in_shape[0], min(in_shape[1:])
        pad1 = 2 if side < 32 else 0  # keep 28x28 at 28 after conv1, as the paper's 32 -> 28
        pad2 = 2 if (side + 2 * pad1 - 4) // 2 < 10 else 0  # keep at least a 2x2 map
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad1),
            make_activation(activation),
            pool(2),
            nn.Conv2d(6, 16, 5, padding=pad2),
            make_activation(activation),
            pool(2),
            nn.Flatten(),
        )
        width = flat_size(self.features, in_shape)
        self.classifier = nn.Sequential(
            nn.Linear(width, 120),
            make_activation(activation),
            Dropout(dropout_rate),
            nn.Linear(120, 84),
            make_activation(activation),
            Dropout(dropout_rate),
            nn.Linear(84, num_classes),
        )


@MODELS.register("lenet5")
def lenet5(
    num_classes: int, in_shape: tuple[int, ...], activation: str = "relu", dropout_rate: float = 0.0
) -> LeNet5:
    return LeNet5(in_shape, num_classes, activation, nn.MaxPool2d, dropout_rate)


@MODELS.register("lenet5_classic")
def lenet5_classic(num_classes: int, in_shape: tuple[int, ...], activation: str = "tanh") -> LeNet5:
    return LeNet5(in_shape, num_classes, activation, nn.AvgPool2d)
