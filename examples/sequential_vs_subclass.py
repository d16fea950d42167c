"""One network two ways: ``nn.Sequential`` and a subclassed ``nn.Module``.

``nn.Sequential`` names its layers by position (``1.weight``, ``4.bias``); a subclass
names them by attribute (``hidden.weight``, ``out.bias``). Apart from those names the
two are the same network: the same tensors in the same order, so one's ``state_dict``
loads into the other once the keys are renamed, and with the same weights and the same
seed (dropout draws from torch's generator) they compute the same outputs and train
along the same trajectory, bit for bit.

Data: scikit-learn's 8x8 digits (offline) through dlzoo's data pipeline, flattened.
Model: 64 -> 32 -> ReLU -> dropout -> 10, written both ways.
Run: load the Sequential's weights into the subclass, then train each for a few SGD steps.
Look: the name mapping, equal outputs, equal losses and final weights.

Run: ``python examples/sequential_vs_subclass.py``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.config import DataConfig
from dlzoo.data.pipeline import load_data

STEPS = 5
BATCH_SIZE = 32
LR = 0.5


class MLP(nn.Module):
    """The subclassed form: layers are attributes, ``forward`` says how they connect."""

    def __init__(self, dropout_rate: float = 0.2) -> None:
        super().__init__()
        self.hidden = nn.Linear(64, 32)
        self.dropout = nn.Dropout(dropout_rate)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, 1, 8, 8) -> (B, 64)
        return self.out(self.dropout(torch.relu(self.hidden(x))))


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> list[float]:
    """``STEPS`` plain SGD steps on random batches; the seed fixes the batches and the dropout masks."""
    torch.manual_seed(seed)
    model.train()
    losses = []
    for _ in range(STEPS):
        batch = torch.randperm(len(x))[:BATCH_SIZE]
        loss = F.cross_entropy(model(x[batch]), y[batch])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():  # torch.optim.SGD(lr=LR) without momentum, written out
            for parameter in model.parameters():
                parameter -= LR * parameter.grad
        losses.append(loss.item())
    return losses


# Data: training digits (N, 1, 8, 8) in [0, 1].
train = load_data(DataConfig(name="digits")).train
x, y = train.x.float() / 255, train.y

# Model: the same layers, built with different seeds so they start apart.
torch.manual_seed(0)
sequential = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
torch.manual_seed(1)
subclass = MLP()

mapping = dict(zip(sequential.state_dict(), subclass.state_dict()))
for sequential_name, subclass_name in mapping.items():
    print(f"  {sequential_name:10} -> {subclass_name}")
shapes = [t.shape for t in sequential.state_dict().values()]
assert shapes == [t.shape for t in subclass.state_dict().values()], "the two forms differ in shape"

sequential.eval()
subclass.eval()
with torch.no_grad():
    assert not torch.equal(sequential(x), subclass(x))  # different seeds, different weights
    subclass.load_state_dict({mapping[k]: v for k, v in sequential.state_dict().items()})
    assert torch.equal(sequential(x), subclass(x))
print("after load_state_dict with renamed keys: identical outputs (eval mode)")

# Run: the same seed for both trainings.
sequential_losses = train_steps(sequential, x, y, seed=42)
subclass_losses = train_steps(subclass, x, y, seed=42)

# Look.
print("losses, Sequential:", " ".join(f"{loss:.6f}" for loss in sequential_losses))
print("losses, subclass:  ", " ".join(f"{loss:.6f}" for loss in subclass_losses))
assert sequential_losses == subclass_losses
final = subclass.state_dict()
assert all(torch.equal(v, final[mapping[k]]) for k, v in sequential.state_dict().items())
print(f"OK: identical outputs and training trajectory for {STEPS} steps")
