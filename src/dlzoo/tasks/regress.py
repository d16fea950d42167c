"""Regression: mean squared error, with mean absolute error reported beside it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlzoo.registry import TASKS
from dlzoo.tasks.base import Task


@TASKS.register("regress")
class RegressTask(Task):
    def compute_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs.float(), y.float().reshape(outputs.shape))

    def metric_names(self) -> list[str]:
        return ["loss", "mae"]

    def batch_metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mae": (outputs.float() - y.float().reshape(outputs.shape)).abs().mean()}
