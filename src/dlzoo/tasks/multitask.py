"""Multi-task classification: one softmax head per label position (the notes' captcha example).

The model returns (B, heads, classes) logits (a model registered with ``multi_head=True``,
e.g. ``captcha_cnn``) and the labels are (B, heads) class indices. The loss is the sum over
heads of each head's mean cross-entropy, so every head pulls on the shared trunk as hard as
a single-task classifier would. Metrics: ``accuracy`` = every head right (a whole captcha
read correctly; what ``train.monitor=val_accuracy`` and the test measurement use),
``char_accuracy`` = the mean over heads, and ``head1_accuracy`` ... per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.config import RunConfig
from dlzoo.registry import MODELS, TASKS
from dlzoo.tasks.base import Task


def top_sequences(probabilities: torch.Tensor, k: int) -> list[tuple[list[int], float]]:
    """The ``k`` most probable label sequences of one example's (heads, classes) probabilities,
    best first, each with its probability (the heads are independent: the product of theirs).

    Exact: the k best sequences of n+1 heads extend only the k best of the first n."""
    beams: list[tuple[list[int], float]] = [([], 1.0)]
    for row in probabilities.float().tolist():
        best = sorted(range(len(row)), key=row.__getitem__, reverse=True)[:k]
        extended = [(labels + [c], p * row[c]) for labels, p in beams for c in best]
        beams = sorted(extended, key=lambda beam: beam[1], reverse=True)[:k]
    return beams


@TASKS.register("multitask")
class MultiTaskTask(Task):
    def __init__(self, model: nn.Module, cfg: RunConfig, num_classes: int) -> None:
        super().__init__(model, cfg, num_classes)
        self.heads: int = getattr(model, "heads", 0)
        if not self.heads:
            multi = ", ".join(n for n in MODELS.names() if MODELS.info(n).get("multi_head")) or "none"
            raise ValueError(
                f"task multitask needs a multi-head model; {cfg.model.name!r} has one head. "
                f"Multi-head models: {multi}"
            )
        if cfg.task.loss != "cross_entropy":
            raise ValueError(f"task multitask trains with task.loss=cross_entropy, got {cfg.task.loss!r}")

    def _check_labels(self, outputs: torch.Tensor, y: torch.Tensor) -> None:
        if y.shape != outputs.shape[:2]:
            raise ValueError(
                f"task multitask needs labels of shape (B, {self.heads}), one class per head, got "
                f"{tuple(y.shape)}; use a multi-label data set such as data.name=captcha"
            )

    def compute_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_labels(outputs, y)
        logits = outputs.float().transpose(1, 2)  # (B, classes, heads): cross_entropy's class dim is 1
        smoothing = self.cfg.task.label_smoothing
        per_head = F.cross_entropy(logits, y, label_smoothing=smoothing, reduction="none").mean(dim=0)
        return per_head.sum()

    def metric_names(self) -> list[str]:
        return ["loss", "accuracy", "char_accuracy", *(f"head{i}_accuracy" for i in range(1, self.heads + 1))]

    def batch_metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        correct = outputs.argmax(dim=-1) == y  # (B, heads)
        per_head = correct.float().mean(dim=0)  # (heads,)
        return {
            "accuracy": correct.all(dim=1).float().mean(),
            "char_accuracy": per_head.mean(),
            **{f"head{i}_accuracy": value for i, value in enumerate(per_head, start=1)},
        }
