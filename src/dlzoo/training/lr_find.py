"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", section 3.3; fast.ai's ``lr_find``): train a recipe's model for a few hundred batches
while the learning rate grows exponentially from tiny to huge, and read a good range off the loss.

The data, model, task and optimiser are built exactly as ``dlzoo train`` builds them
(``build_experiment``); only the schedule is replaced: before each step the optimiser's lr is set
to ``start * (end / start) ** (step / (steps - 1))``. The loss is smoothed with a bias-corrected
exponential moving average and the test stops once the smoothed loss exceeds 4x its best (or a loss
is not finite). Nothing is saved but the curve: the weights are a probe's.

The suggested range, for the ``cyclic`` (triangular) schedule:

- ``max_lr``: the lr at the steepest descent of the smoothed loss against log(lr), searched up to
  the loss minimum. There the loss falls fastest per factor of lr, and it lies well below where the
  loss turns up, so the whole cycle stays where training still makes progress. The minimum itself
  is not used: the moving average lags, so it sits past the point where training already got
  unstable (fast.ai's other rule, a tenth of the minimum's lr, is usually close to the steepest
  point and is recorded too).
- ``base_lr = max_lr / 6``, not below ``start`` (lower lrs were not tried). Smith's text gives
  "1/3 or 1/4 of max_lr" as a rule of thumb; his CIFAR-10 bounds (0.001 and 0.006) are 1/6, the
  ratio used here because the steepest-descent ``max_lr`` is itself on the careful side.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from dlzoo.config import RunConfig
from dlzoo.data.loader import BatchLoader
from dlzoo.report.plots import plt, save_figure
from dlzoo.training import run as runinfo
from dlzoo.training.finetune import set_train_mode
from dlzoo.training.loop import Experiment, build_experiment, prepare_batch

SMOOTHING = 0.9
"""Moving-average factor of the loss: about the last 10 steps count (0.98 would lag ~50 of 100)."""
DIVERGED = 4.0
"""Stop once the smoothed loss exceeds this multiple of its best value."""
BASE_LR_DIVISOR = 6.0
"""base_lr = max_lr / this (the ratio of Smith's CIFAR-10 bounds, 0.001 and 0.006)."""
MIN_STEPS = 5


def lr_at(step: int, steps: int, start: float, end: float) -> float:
    """Exponential ramp: ``start`` at step 0, ``end`` at step ``steps - 1``."""
    return start * (end / start) ** (step / (steps - 1))


def endless_batches(loader: BatchLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches, epoch after epoch, in the order training would see them."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def range_test(exp: Experiment, start: float, end: float, steps: int) -> tuple[list[dict[str, float]], str]:
    """Rows ``{step, lr, loss, smoothed_loss}`` and why the test ended."""
    exp.task.schedulers = []  # the lr is set by hand below, before every step
    groups = [group for optimizer in exp.task.optimizers for group in optimizer.param_groups]
    multipliers = [group["lr"] / exp.cfg.optim.lr for group in groups]  # model.features_lr_mult groups
    set_train_mode(exp.model)
    rows: list[dict[str, float]] = []
    average, best = 0.0, math.inf
    batches = endless_batches(exp.loaders.train)
    for step in range(steps):
        lr = lr_at(step, steps, start, end)
        for group, multiplier in zip(groups, multipliers, strict=True):
            group["lr"] = lr * multiplier
        x, y = next(batches)
        loss = float(exp.task.train_step(prepare_batch(x, exp.channels_last), y)["loss"])
        if not math.isfinite(loss):
            return rows, f"stopped at lr {lr:.3g}: the training loss became {loss}"
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (step + 1))  # bias-corrected, as Adam's moments
        rows.append({"step": step, "lr": lr, "loss": loss, "smoothed_loss": smoothed})
        best = min(best, smoothed)
        if smoothed > DIVERGED * best:
            return rows, f"stopped at lr {lr:.3g}: the smoothed loss passed {DIVERGED:g}x its best"
    return rows, f"ran all {steps} steps"


def suggest(rows: list[dict[str, float]], start: float) -> dict[str, Any]:
    """The suggested cyclic range (see the module docstring for the rule)."""
    lrs = np.array([row["lr"] for row in rows])
    smoothed = np.array([row["smoothed_loss"] for row in rows])
    lowest = int(np.argmin(smoothed))
    if lowest < 2:  # the loss never fell: no descent to measure
        max_lr, rule = float(lrs[0]), "the loss never fell: try a lower --start"
    else:
        slopes = np.gradient(smoothed[: lowest + 1], np.log10(lrs[: lowest + 1]))
        max_lr, rule = float(lrs[int(np.argmin(slopes))]), "steepest descent of the smoothed loss"
    return {
        "max_lr": max_lr,
        "base_lr": max(max_lr / BASE_LR_DIVISOR, start),
        "rule": f"max_lr: {rule}; base_lr: max_lr / {BASE_LR_DIVISOR:g}",
        "min_loss_lr": float(lrs[lowest]),
        "min_loss_lr_over_10": float(lrs[lowest] / 10),
    }


def cyclic_overrides(suggestion: dict[str, Any]) -> list[str]:
    """``--set`` overrides that train with the suggested range and the triangular schedule."""
    return [
        "schedule.name=cyclic",
        f"schedule.min_lr={suggestion['base_lr']:.3g}",
        f"schedule.max_lr={suggestion['max_lr']:.3g}",
    ]


def plot_range_test(rows: list[dict[str, float]], suggestion: dict[str, Any], path: Path, title: str) -> None:
    """Loss against lr (log scale), raw and smoothed, with the suggested range shaded."""
    figure, axes = plt.subplots(figsize=(6.5, 4))
    lrs = [row["lr"] for row in rows]
    axes.plot(lrs, [row["loss"] for row in rows], color="0.75", linewidth=1, label="loss")
    axes.plot(lrs, [row["smoothed_loss"] for row in rows], color="C0", label="smoothed loss")
    axes.axvspan(suggestion["base_lr"], suggestion["max_lr"], color="C2", alpha=0.2, label="suggested range")
    axes.axvline(suggestion["max_lr"], color="C2", linestyle="--")
    axes.set_xscale("log")
    axes.xaxis.set_minor_formatter(NullFormatter())  # labels on powers of ten only (and a faster draw)
    smoothed = [row["smoothed_loss"] for row in rows]
    descent = smoothed[: smoothed.index(min(smoothed)) + 1]
    axes.set_ylim(min(smoothed) * 0.9, max(descent) * 1.25)  # the diverging tail is clipped
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)


def lr_find(cfg: RunConfig, start: float = 1e-6, end: float = 1.0, steps: int = 100) -> dict[str, Any]:
    """Run the range test for ``cfg``; writes ``lr_find.csv``, ``lr_find.png`` and ``lr_find.json``
    into a new ``<runs_dir>/<recipe>/lr-find-<time>/`` and returns what the json holds."""
    if not 0 < start < end:
        raise ValueError(f"lr-find: need 0 < start < end, got start={start:g}, end={end:g} (e.g. 1e-6 and 1)")
    if steps < MIN_STEPS:
        raise ValueError(f"lr-find: steps must be >= {MIN_STEPS} to show a curve, got {steps}")
    exp = build_experiment(cfg.with_overrides(["schedule.name=constant", "schedule.warmup_epochs=0"]))
    rows, ended = range_test(exp, start, end, steps)
    if not rows:
        raise ValueError(f"lr-find: the first step already failed ({ended}); lower start")
    suggestion = suggest(rows, start)
    folder = runinfo.new_run_dir(cfg.log.runs_dir, cfg.recipe, prefix="lr-find-")
    with open(folder / "lr_find.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_range_test(rows, suggestion, folder / "lr_find.png", f"LR range test: {cfg.recipe}")
    result = {
        "recipe": cfg.recipe,
        "folder": str(folder),
        "command": runinfo.command_line(),
        "start": start,
        "end": end,
        "steps": steps,
        "steps_run": len(rows),
        "ended": ended,
        "suggestion": suggestion,
        "overrides": cyclic_overrides(suggestion),
        "data": exp.bundle.source,
        "dlzoo_version": runinfo.version(),
        "git_revision": runinfo.git_revision(),
        "config": cfg.to_dict(),
    }
    runinfo.write_json(folder / "lr_find.json", result)
    return result
