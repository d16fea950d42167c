"""The interface every classifier shares, and the pieces most families use.

A classifier is a backbone (everything up to the last hidden representation)
followed by a classifier module whose last ``nn.Linear`` produces the logits.
Most families call the two ``features`` and ``classifier``; families whose
parameter names follow torchvision's (ResNet's ``conv1 ... layer4, fc``) say
which child is the classifier with ``classifier_name`` and override
``forward_features``. Fine-tuning, freezing and transfer learning use only this
interface (``forward_features``, ``backbone_parameters``, ``head``,
``reset_head``), so they are one code path for every family.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (relu, sigmoid, tanh, leaky_relu)."""
    table = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}. Valid: {', '.join(table)}")
    return table[name]()


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper CPU mask; every dlzoo model uses it.

    torch's CPU dropout draws one random number per element, one after another (``bernoulli_``).
    This one draws 64 random bits per four elements and keeps an element where its 16 bits fall
    below ``round((1 - p) * 2**16)``, so the keep rate is ``1 - p`` to within 1/65536; survivors
    are scaled by the inverse of that exact rate, which keeps the expected activation unchanged.
    Forward and backward together run 2-5x as fast as torch's on the throughput nets' dropout
    layers (docs/benchmarks.md, Dropout). Other devices use torch's own (fused) kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        threshold = round((1 - self.p) * 2**16)  # elements kept out of 65536
        if threshold == 2**16:  # p below 2^-17 rounds to 0: nothing dropped
            return x
        if threshold == 0:  # p rounds to 1: everything dropped (and no division by zero)
            return x * 0.0
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = bits.view(torch.int16)[: x.numel()] < threshold - 2**15  # int16 is uniform on [-2^15, 2^15)
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        keep = keep.as_strided(x.shape, x.stride()) if dense else keep.view(x.shape)  # the mask in x's layout
        return (x * keep).mul_(2**16 / threshold)  # autograd keeps only the bool mask for the backward


class Classifier(nn.Module):
    """``forward(x) = classifier(forward_features(x))``; subclasses build both in ``__init__``."""

    classifier_name = "classifier"
    """Name of the child module that maps features to logits (torchvision's ResNet: ``fc``)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) features: the classifier module's input."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier_module(self.forward_features(x))

    @property
    def classifier_module(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def backbone_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of everything outside the classifier module."""
        prefix = self.classifier_name + "."
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(prefix)]

    @property
    def head(self) -> nn.Linear:
        """The last linear layer: the one that maps to class logits."""
        linears = [m for m in self.classifier_module.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError(f"{type(self).__name__}.{self.classifier_name} has no nn.Linear head")
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
        classifier = self.classifier_module
        for name, module in classifier.named_modules():
            if module is old:
                if name:
                    parent_name, _, child = name.rpartition(".")
                    parent = classifier.get_submodule(parent_name) if parent_name else classifier
                    setattr(parent, child, new)
                else:
                    setattr(self, self.classifier_name, new)
                return


def load_matching(model: nn.Module, source: dict[str, torch.Tensor], what: str, hint: str) -> dict[str, Any]:
    """Copy ``source`` into ``model``; every tensor must fit except the head's, which stays fresh
    when its shape differs (another class count). ``what`` and ``hint`` word the error."""
    own = model.state_dict()
    head = getattr(model, "head", None)
    head_keys = {f"{n}.{p}" for n, m in model.named_modules() if m is head for p in ("weight", "bias")}
    misfits = [k for k in own if k not in head_keys and (k not in source or source[k].shape != own[k].shape)]
    if misfits:
        raise ValueError(
            f"{what}: those weights do not fit this model ({len(misfits)} tensors missing or of "
            f"another shape, e.g. {misfits[0]}); {hint}"
        )
    loaded = {k: v for k, v in source.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict({**own, **loaded})
    return {"loaded": len(loaded), "fresh": sorted(set(own) - set(loaded))}


def flat_size(module: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Number of features ``module`` produces per example for inputs of ``in_shape`` (C, H, W)."""
    with torch.no_grad():
        was_training = module.training
        module.eval()
        out = module(torch.zeros(1, *in_shape))
        module.train(was_training)
    return math.prod(out.shape[1:])
