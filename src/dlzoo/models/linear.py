"""Linear models: linear regression, the perceptron, logistic and softmax regression.

All four are one affine map of the flattened input; they differ in what the
outputs mean and in the loss that trains them:
- linear regression: one output per target, mean squared error (``task.name = "regress"``);
- perceptron: one score per class, trained with the perceptron criterion
  (``task.loss = "perceptron"``: only mistakes move the weights; Rosenblatt 1958);
- logistic regression: one logit for two classes, sigmoid + binary cross-entropy;
- softmax regression: one logit per class, softmax + cross-entropy.
"""

from __future__ import annotations

import math

from torch import nn

from dlzoo.models.base import Classifier
from dlzoo.registry import MODELS


class LinearClassifier(Classifier):
    """Flatten, then a single ``nn.Linear`` head with ``num_outputs`` outputs."""

    def __init__(self, in_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        self.features = nn.Flatten()
        self.classifier = nn.Linear(math.prod(in_shape), num_outputs)


@MODELS.register("linear")
def linear(num_classes: int, in_shape: tuple[int, ...]) -> LinearClassifier:
    """For regression ``num_classes`` is the number of targets (the data set's target names)."""
    return LinearClassifier(in_shape, num_classes)


@MODELS.register("perceptron")
def perceptron(num_classes: int, in_shape: tuple[int, ...]) -> LinearClassifier:
    return LinearClassifier(in_shape, num_classes)


@MODELS.register("logistic")
def logistic(num_classes: int, in_shape: tuple[int, ...]) -> LinearClassifier:
    if num_classes != 2:
        raise ValueError(
            f"logistic regression separates 2 classes, the data has {num_classes}: "
            "use model.name=softmax, or pick two classes with data.classes=0,1"
        )
    return LinearClassifier(in_shape, 1)


@MODELS.register("softmax")
def softmax(num_classes: int, in_shape: tuple[int, ...]) -> LinearClassifier:
    return LinearClassifier(in_shape, num_classes)
