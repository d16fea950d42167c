"""Classification: cross-entropy (or the perceptron criterion), top-1 and top-k
accuracy, and the confusion matrix. A model with a single output is a binary
logistic classifier: sigmoid + binary cross-entropy, class 1 when the logit > 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlzoo.registry import TASKS
from dlzoo.tasks.base import Task


def predicted_class(outputs: torch.Tensor) -> torch.Tensor:
    """Class index per row; one-logit (binary logistic) outputs mean class 1 when > 0."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).long()
    return outputs.argmax(dim=1)


def class_probabilities(outputs: torch.Tensor) -> torch.Tensor:
    """(B, num_classes) probabilities, also for one-logit binary outputs."""
    if outputs.shape[1] == 1:
        p1 = torch.sigmoid(outputs.float())
        return torch.cat([1 - p1, p1], dim=1)
    return F.softmax(outputs.float(), dim=1)


def perceptron_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-class perceptron criterion: mean of (best score - true class score).
    Zero for a correctly ranked example, so only mistakes move the weights."""
    true_score = scores.gather(1, y[:, None])[:, 0]
    return (scores.max(dim=1).values - true_score).mean()


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    flat = target * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@TASKS.register("classify")
class ClassifyTask(Task):
    def compute_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        if outputs.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(outputs[:, 0], y.float())
        if self.cfg.task.loss == "perceptron":
            return perceptron_loss(outputs, y)
        return F.cross_entropy(outputs, y, label_smoothing=self.cfg.task.label_smoothing)

    def metric_names(self) -> list[str]:
        top_k = [f"top{self.cfg.task.top_k}_accuracy"] if self.num_classes > self.cfg.task.top_k else []
        return ["loss", "accuracy", *top_k]

    def batch_metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        metrics = {"accuracy": (predicted_class(outputs) == y).float().mean()}
        k = self.cfg.task.top_k
        if self.num_classes > k:
            top = outputs.topk(k, dim=1).indices
            metrics[f"top{k}_accuracy"] = (top == y[:, None]).any(dim=1).float().mean()
        return metrics
