"""The small CNN of the Keras transfer-learning example (mnist_transfer_cnn.py).

Feature layers: conv 32@3x3 -> ReLU -> conv 32@3x3 -> ReLU -> max-pool 2x2 -> dropout
0.25 -> flatten; classification layers: dense 128 -> ReLU -> dropout 0.5 -> dense.
The example trains it on digits 0-4, freezes the feature layers, and retrains only
the classification layers on digits 5-9 (recipes ``mnist-cnn-0to4`` and
``mnist-transfer-5to9``).
"""

from __future__ import annotations

from torch import nn

from dlzoo.models.base import Classifier, Dropout, flat_size, make_activation
from dlzoo.registry import MODELS


class TransferCNN(Classifier):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, activation: str = "relu") -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"this CNN needs images (C, H, W), got input shape {in_shape}")
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[0], 32, 3),
            make_activation(activation),
            nn.Conv2d(32, 32, 3),
            make_activation(activation),
            nn.MaxPool2d(2),
            Dropout(0.25),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(flat_size(self.features, in_shape), 128),
            make_activation(activation),
            Dropout(0.5),
            nn.Linear(128, num_classes),
        )


@MODELS.register("keras_transfer_cnn")
def keras_transfer_cnn(num_classes: int, in_shape: tuple[int, ...], activation: str = "relu") -> TransferCNN:
    return TransferCNN(in_shape, num_classes, activation)
