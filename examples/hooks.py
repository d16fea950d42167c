"""Forward and backward hooks: catch the features and the gradient of an intermediate layer.

The notes' "get gradients of intermediate variables". Autograd keeps ``.grad`` only for
leaf tensors (the parameters); the gradient of an activation inside the network is used
once on the way back and thrown away. Hooks let us catch it as it passes:

- ``module.register_forward_hook(fn)`` calls ``fn(module, inputs, output)`` after each
  forward, so it sees the layer's output (its features);
- ``tensor.register_hook(fn)`` calls ``fn(grad)`` when the gradient of that tensor is
  computed;
- ``module.register_full_backward_hook(fn)`` calls ``fn(module, grad_input, grad_output)``
  with the gradients of the layer's inputs and outputs.

Data: one batch of scikit-learn's 8x8 digits (offline) through dlzoo's data pipeline.
Model: dlzoo's ``lenet5``, untrained (hooks do not care). Run: one forward and backward
with hooks on the second convolution. Look: both caught gradients equal
``torch.autograd.grad(loss, activation)``; after ``handle.remove()`` the hooks stay silent.

Run: ``python examples/hooks.py``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import dlzoo
from dlzoo.config import DataConfig
from dlzoo.data.pipeline import load_data

torch.manual_seed(0)

# Data: 64 training digits, uint8 (B, 1, 8, 8) scaled to [0, 1].
train = load_data(DataConfig(name="digits")).train
x, y = train.x[:64].float() / 255, train.y[:64]

# Model: LeNet-5's features are conv, relu, pool, conv, relu, pool, flatten.
model = dlzoo.create_model("lenet5", num_classes=10, in_shape=(1, 8, 8))
conv = model.features[3]
assert isinstance(conv, nn.Conv2d)

caught: dict[str, torch.Tensor] = {}


def save_features(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    caught["features"] = output  # (B, 16, H, W), still part of the graph
    output.register_hook(lambda grad: caught.__setitem__("tensor_grad", grad))


def save_grad_output(
    module: nn.Module, grad_input: tuple[torch.Tensor | None, ...], grad_output: tuple[torch.Tensor, ...]
) -> None:
    caught["grad_output"] = grad_output[0]


handles = [conv.register_forward_hook(save_features), conv.register_full_backward_hook(save_grad_output)]

# Run: autograd.grad first (retain the graph), then backward, which fires the gradient hooks.
loss = F.cross_entropy(model(x), y)
(expected,) = torch.autograd.grad(loss, caught["features"], retain_graph=True)
loss.backward()

# Look.
print(f"features of {conv}: {tuple(caught['features'].shape)}")
print(f"gradient caught by the tensor hook:   {tuple(caught['tensor_grad'].shape)}")
print(f"gradient caught by the backward hook: {tuple(caught['grad_output'].shape)}")
assert torch.equal(caught["tensor_grad"], expected), "tensor hook differs from autograd.grad"
assert torch.equal(caught["grad_output"], expected), "backward hook differs from autograd.grad"
print(f"largest |gradient| of the activation: {expected.abs().max():.3g}")

for handle in handles:
    handle.remove()
caught.clear()
model.zero_grad()
F.cross_entropy(model(x), y).backward()
assert not caught, f"removed hooks still fired: {sorted(caught)}"
print("after handle.remove() the hooks caught nothing")
print("OK: hooked gradient equals torch.autograd.grad")
