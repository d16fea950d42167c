"""A shared CNN with one softmax head per output position: the notes' multi-task captcha model.

Multi-task learning: one convolutional trunk, trained jointly by every head, reads the whole
captcha; head i classifies its i-th character. The trunk is three blocks of conv 3x3 ->
batch norm -> ReLU -> max-pool 2x2 (32, 64, 128 filters), flattened so each head still sees
where things are. The heads are one ``nn.Linear`` with ``heads * num_classes`` outputs,
reshaped to (B, heads, num_classes) logits, so ``head`` and ``reset_head`` keep their
meaning for fine-tuning (``reset_head(n)`` gives n classes per head).
"""

from __future__ import annotations

import torch
from torch import nn

from dlzoo.models.base import Classifier, Dropout, flat_size
from dlzoo.registry import MODELS


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv 3x3 'same' (no bias: BN has one), BN, ReLU, 2x2 max-pool (rounding up, so 8x8 inputs fit)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
    )


class MultiHeadCNN(Classifier):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        heads: int,
        filters: tuple[int, ...],
        dropout_rate: float,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"the multi-head CNN needs images (C, H, W), got input shape {in_shape}")
        if heads < 1:
            raise ValueError(f"a multi-head model needs heads >= 1, got {heads}")
        self.heads = heads
        channels = [in_shape[0], *filters]
        self.features = nn.Sequential(*(conv_block(a, b) for a, b in zip(channels, filters)), nn.Flatten())
        self.classifier = nn.Sequential(
            Dropout(dropout_rate),
            nn.Linear(flat_size(self.features, in_shape), heads * num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).unflatten(1, (self.heads, -1))  # (B, heads, num_classes)

    @property
    def num_outputs(self) -> int:
        """Classes per head."""
        return self.head.out_features // self.heads

    def reset_head(self, num_classes: int) -> None:
        """A fresh head with ``num_classes`` outputs for each of the heads."""
        super().reset_head(self.heads * num_classes)


@MODELS.register("captcha_cnn", multi_head=True)
def captcha_cnn(
    num_classes: int, in_shape: tuple[int, ...], dropout_rate: float = 0.3, heads: int = 4
) -> MultiHeadCNN:
    """One head per captcha character (four for ``dlzoo.data.captcha``)."""
    return MultiHeadCNN(in_shape, num_classes, heads, (32, 64, 128), dropout_rate)
