"""Multi-layer perceptron: Flatten, then [Linear, BatchNorm?, activation, Dropout?] per
hidden layer, then a Linear head. The Keras "Dense 128 relu, Dense 10" MNIST model is
``mlp`` with ``hidden_sizes=[128]``.
"""

from __future__ import annotations

import math

from torch import nn

from dlzoo.models.base import Classifier, Dropout, make_activation
from dlzoo.registry import MODELS


class MLP(Classifier):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        hidden_sizes: list[int],
        activation: str = "relu",
        dropout_rate: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for hidden in hidden_sizes:
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(make_activation(activation))
            if dropout_rate > 0:
                layers.append(Dropout(dropout_rate))
            width = hidden
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)


@MODELS.register("mlp")
def mlp(
    num_classes: int,
    in_shape: tuple[int, ...],
    hidden_sizes: list[int] | None = None,
    activation: str = "relu",
    dropout_rate: float = 0.0,
    batch_norm: bool = False,
) -> MLP:
    return MLP(in_shape, num_classes, hidden_sizes or [128], activation, dropout_rate, batch_norm)
