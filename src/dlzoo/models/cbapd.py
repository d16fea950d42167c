"""The TF2 course's baseline CNN, named for its layer order "CBAPD":
Convolution, Batch norm, Activation, Pooling, Dropout, then a dense head.

The course's version: conv 6@5x5 "same" -> BN -> ReLU -> max-pool 2x2 ->
dropout 0.2 -> flatten -> dense 128 ReLU -> dropout 0.2 -> dense 10.
``cbapd`` is exactly that; ``cbapd_wide`` stacks three CBAPD blocks
(32, 64, 128 filters), a small but much stronger baseline.
"""

from __future__ import annotations

from torch import nn

from dlzoo.models.base import Classifier, Dropout, flat_size, make_activation
from dlzoo.registry import MODELS


def cbapd_block(in_channels: int, out_channels: int, activation: str, dropout_rate: float) -> nn.Sequential:
    """Conv 5x5 'same' (no bias: BN has one), BN, activation, 2x2 max-pool, dropout."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 5, padding=2, bias=False),
        nn.BatchNorm2d(out_channels),
        make_activation(activation),
        nn.MaxPool2d(2, ceil_mode=True),  # Keras padding="same" pooling
        Dropout(dropout_rate),
    )


class CBAPD(Classifier):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        filters: tuple[int, ...],
        hidden_size: int,
        activation: str,
        dropout_rate: float,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"CBAPD needs images (C, H, W), got input shape {in_shape}")
        channels = [in_shape[0], *filters]
        blocks = [
            cbapd_block(c_in, c_out, activation, dropout_rate) for c_in, c_out in zip(channels, filters)
        ]
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(flat_size(self.features, in_shape), hidden_size),
            make_activation(activation),
            Dropout(dropout_rate),
            nn.Linear(hidden_size, num_classes),
        )


@MODELS.register("cbapd")
def cbapd(
    num_classes: int, in_shape: tuple[int, ...], activation: str = "relu", dropout_rate: float = 0.2
) -> CBAPD:
    return CBAPD(in_shape, num_classes, (6,), 128, activation, dropout_rate)


@MODELS.register("cbapd_wide")
def cbapd_wide(
    num_classes: int, in_shape: tuple[int, ...], activation: str = "relu", dropout_rate: float = 0.2
) -> CBAPD:
    return CBAPD(in_shape, num_classes, (32, 64, 128), 256, activation, dropout_rate)
