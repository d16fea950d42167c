"""The task interface: what one training step computes.

A task owns the model, its optimiser(s) and schedule(s), and says what a
step does: ``train_step(x, y)`` computes the loss, updates the weights and
returns ``{"loss": ..., **metrics}`` as 0-d tensors on the model's device;
``eval_step(x, y)`` returns the model's outputs and the same, without updating.
They stay tensors so that a GPU step never waits for the host: the loop reads
them (one copy for all of them) only every ``train.sync_every`` steps, and
checks there that the loss is finite. The loop (``dlzoo.training.loop``) owns everything else:
devices, precision, epochs, logging, checkpoints, early stopping. A task with
two optimisers (a GAN) overrides ``configure_optimizers`` and ``train_step``,
as a Keras ``train_step`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dlzoo.config import RunConfig
from dlzoo.training.finetune import parameter_groups
from dlzoo.training.optim import build_optimizer, build_scheduler


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing trained after it is saved."""


class Task:
    """Single-model, single-optimiser supervised task; subclasses define ``compute_loss``."""

    def __init__(self, model: nn.Module, cfg: RunConfig, num_classes: int) -> None:
        self.model = model
        self.step_model: nn.Module = model
        """What ``train_step`` calls: the model, or its DDP wrapper in data-parallel training
        (which averages the gradients over the processes during ``backward``)."""
        self.cfg = cfg
        self.num_classes = num_classes
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[torch.optim.lr_scheduler.LRScheduler] = []
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext

    def configure_optimizers(self, steps_per_epoch: int, total_steps: int) -> None:
        """Build the optimiser(s) and schedule(s) from the config."""
        optim = self.cfg.optim
        groups = parameter_groups(
            self.model, self.cfg.model.features_lr_mult, optim.lr, optim.weight_decay, optim.name == "muon"
        )
        optimizer = build_optimizer(groups, optim, total_steps)
        self.optimizers = [optimizer]
        self.schedulers = [build_scheduler(optimizer, self.cfg.schedule, steps_per_epoch, total_steps)]

    def compute_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def batch_metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metrics of one batch besides the loss (accuracy, ...), as batch means (0-d tensors)."""
        return {}

    def metric_names(self) -> list[str]:
        """Names of what ``train_step``/``eval_step`` return (the loop prefixes train_/val_/test_)."""
        return ["loss"]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        (optimizer,) = self.optimizers
        optimizer.zero_grad(set_to_none=True)
        metrics = self.accumulate_gradients(x, y)
        if self.cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        optimizer.step()
        for scheduler in self.schedulers:
            scheduler.step()
        return metrics

    def accumulate_gradients(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward and backward over the batch in ``train.micro_batches`` chunks, one after the
        other, each chunk's loss weighted by its share of the batch: the gradient of the batch's
        mean loss (``compute_loss`` is a mean over examples), for the activation memory of one
        chunk; batch norm alone differs, normalising each chunk by its own statistics. Returns
        the batch's loss and metrics (0-d tensors)."""
        chunks = min(self.cfg.train.micro_batches, len(y))
        if chunks == 1:  # the plain step, no scaling
            with self.autocast():
                outputs = self.step_model(x)
                loss = self.compute_loss(outputs, y)
            loss.backward()
            return {"loss": loss.detach(), **self.batch_metrics(outputs.detach(), y)}
        # data-parallel: gradients are averaged over the processes once, in the last backward
        hold_back = getattr(self.step_model, "no_sync", contextlib.nullcontext)
        sums: dict[str, torch.Tensor] = {}
        for index, (x_chunk, y_chunk) in enumerate(zip(x.tensor_split(chunks), y.tensor_split(chunks))):
            share = len(y_chunk) / len(y)
            with hold_back() if index < chunks - 1 else contextlib.nullcontext():
                with self.autocast():
                    outputs = self.step_model(x_chunk)
                    loss = self.compute_loss(outputs, y_chunk)
                (loss * share).backward()
            chunk = {"loss": loss.detach(), **self.batch_metrics(outputs.detach(), y_chunk)}
            for name, value in chunk.items():
                sums[name] = sums[name] + value * share if name in sums else value * share
        return sums

    @torch.no_grad()
    def eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's outputs for one batch, and its loss and metrics, always in float32
        (``autocast`` speeds up training only): a run's validation and test numbers are then what
        ``dlzoo eval``, ``predict`` and an exported model compute from the same weights, on any
        machine, with bfloat16 or without. The outputs let one pass also give the predictions."""
        outputs = self.model(x)
        loss = self.compute_loss(outputs, y)
        return outputs, {"loss": loss, **self.batch_metrics(outputs, y)}

    @property
    def lr(self) -> float:
        return self.optimizers[0].param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        """Optimiser and schedule state (the weights are saved separately)."""
        return {
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
