"""The interface every classifier shares, and the pieces most families use.

A classifier is ``features`` (everything up to the last hidden
representation, flattened) followed by ``classifier`` (the head, whose last
``nn.Linear`` produces the logits). Fine-tuning, freezing and transfer
learning use only this interface, so they are one code path for every family.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (relu, sigmoid, tanh, leaky_relu)."""
    table = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}. Valid: {', '.join(table)}")
    return table[name]()


class Classifier(nn.Module):
    """``forward(x) = classifier(features(x))``; subclasses build both in ``__init__``."""

    features: nn.Module
    classifier: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    @property
    def head(self) -> nn.Linear:
        """The last linear layer: the one that maps to class logits."""
        linears = [m for m in self.classifier.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError(f"{type(self).__name__}.classifier has no nn.Linear head")
        return linears[-1]

    @property
    def num_outputs(self) -> int:
        return self.head.out_features

    def reset_head(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs
        (one output for a binary logistic head)."""
        old = self.head
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        for name, module in self.classifier.named_modules():
            if module is old:
                if name:
                    parent_name, _, child = name.rpartition(".")
                    parent = self.classifier.get_submodule(parent_name) if parent_name else self.classifier
                    setattr(parent, child, new)
                else:
                    self.classifier = new
                return


def flat_size(module: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Number of features ``module`` produces per example for inputs of ``in_shape`` (C, H, W)."""
    with torch.no_grad():
        was_training = module.training
        module.eval()
        out = module(torch.zeros(1, *in_shape))
        module.train(was_training)
    return math.prod(out.shape[1:])
