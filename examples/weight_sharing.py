"""Weight sharing: one layer used in several places is one set of parameters.

A siamese network encodes two images with the *same* encoder and decides from the
difference of the two codes whether they show the same digit. Calling one module twice
in ``forward`` is all it takes to share its weights; there is nothing to tie. What the
example shows:

- the shared encoder's weight appears once in ``parameters()`` (and so once in the
  optimiser), and the model has fewer parameters than an untied twin with two encoders;
- its gradient is the sum of the gradients of each use: an untied twin that starts
  from the same values gets one gradient per copy, and they add up to the shared one.

Data: pairs of scikit-learn's 8x8 digits (offline) through dlzoo's data pipeline.
Model: a 64 -> 16 linear encoder used twice, a linear head on ``|code_a - code_b|``.
Run: one forward and backward of the tied and the untied model. Look: counts and gradients.

Run: ``python examples/weight_sharing.py``
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.config import DataConfig
from dlzoo.data.pipeline import load_data

torch.manual_seed(0)


class Siamese(nn.Module):
    """``head(|encoder_a(a) - encoder_b(b)|)``; pass one encoder twice to share it."""

    def __init__(self, encoder_a: nn.Module, encoder_b: nn.Module) -> None:
        super().__init__()
        self.encoder_a = encoder_a
        self.encoder_b = encoder_b
        self.head = nn.Linear(encoder_a.out_features, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        codes = (self.encoder_a(a) - self.encoder_b(b)).abs()  # (B, 16)
        return self.head(codes).squeeze(1)  # (B,) logit of "same digit"


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Data: 64 pairs of flattened digits (B, 64) in [0, 1]; target 1 when both show the same digit.
train = load_data(DataConfig(name="digits")).train
images = train.x[:128].flatten(1).float() / 255
a, b = images[:64], images[64:]
same = (train.y[:64] == train.y[64:128]).float()
same[::2] = 1.0  # pair every other example with itself, so both answers occur
b[::2] = a[::2]

# Model: tied (one encoder, used twice) and an untied twin starting from the same values.
encoder = nn.Linear(64, 16)
tied = Siamese(encoder, encoder)
untied = Siamese(copy.deepcopy(encoder), copy.deepcopy(encoder))
untied.head.load_state_dict(tied.head.state_dict())

names = [name for name, _ in tied.named_parameters()]
print(f"tied parameters:   {names}")
print(f"untied parameters: {[name for name, _ in untied.named_parameters()]}")
print(f"parameter count: tied {parameter_count(tied):,}, untied {parameter_count(untied):,}")
assert parameter_count(untied) - parameter_count(tied) == parameter_count(encoder)
assert "encoder_b.weight" not in names  # registered under two names, listed once

# Run: one forward and backward of each.
for model in (tied, untied):
    F.binary_cross_entropy_with_logits(model(a, b), same).backward()

# Look: the tied gradient is the sum of the two per-use gradients.
use_a, use_b = untied.encoder_a.weight.grad, untied.encoder_b.weight.grad
print(
    f"|grad| of use a {use_a.norm():.4f}, use b {use_b.norm():.4f}, shared {encoder.weight.grad.norm():.4f}"
)
assert torch.allclose(encoder.weight.grad, use_a + use_b, atol=1e-7)
assert torch.allclose(tied.head.weight.grad, untied.head.weight.grad, atol=1e-7)
print("OK: shared gradient equals the sum of the per-use gradients")
