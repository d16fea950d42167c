"""One training loop for every task.

``train(cfg)`` builds data, model and task from a ``RunConfig``, then runs
``train_one_epoch`` and ``evaluate`` per epoch, logging, checkpointing
(``last`` every epoch, ``best`` by the monitored metric) and stopping early
when asked. The test split is measured once, at the end, with the weights
``train.test_checkpoint`` names.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlzoo.config import RunConfig
from dlzoo.data.core import DataBundle
from dlzoo.data.loader import BatchLoader
from dlzoo.data.pipeline import Loaders, build_loaders, load_data
from dlzoo.errors import StopRun, TrainingError
from dlzoo.models import create_model
from dlzoo.registry import TASKS
from dlzoo.report.plots import plot_curves
from dlzoo.tasks import NonFiniteLossError, Task
from dlzoo.tasks.classify import confusion_matrix, predicted_class
from dlzoo.training import run as runinfo
from dlzoo.training.callbacks import MetricsFile, ProgressBar, TensorBoardLogger
from dlzoo.training.checkpoint import load_weights, save_checkpoint


@dataclass
class TrainState:
    """Counters that a checkpoint restores."""

    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimiser steps taken."""
    best: float | None = None
    """Best monitored value so far."""
    best_epoch: int = 0
    bad_epochs: int = 0
    """Epochs since the monitored value last improved (early stopping)."""


@dataclass
class RunResult:
    run_dir: Path
    test: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu; a named device that is missing is an error."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(kind for kind, ok in available.items() if ok))
    if not available[name]:
        raise ValueError(f"train.device={name} but this machine has no {name}; use auto or cpu")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # AVX-512 BF16 or AMX
    return False


def resolve_toggle(value: str, auto: bool) -> bool:
    return auto if value == "auto" else value == "on"


def prepare_batch(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def train_one_epoch(
    task: Task,
    loader: BatchLoader,
    state: TrainState,
    cfg: RunConfig,
    progress: ProgressBar,
    channels_last: bool,
) -> dict[str, float]:
    """One pass over the training split; returns the example-weighted means of the step metrics."""
    task.model.train()
    loader.set_epoch(state.epoch)
    totals: dict[str, float] = defaultdict(float)
    seen = 0
    progress.start_epoch(state.epoch + 1, cfg.train.epochs, len(loader))
    for x, y in loader:
        metrics = task.train_step(prepare_batch(x, channels_last), y)
        state.step += 1
        seen += len(y)
        for name, value in metrics.items():
            totals[name] += value * len(y)
        progress.advance(len(y), metrics["loss"])
        if cfg.train.max_steps and state.step >= cfg.train.max_steps:
            break
    samples_per_second = progress.end_epoch()
    means = {f"train_{name}": total / seen for name, total in totals.items()}
    return {**means, "samples_per_second": samples_per_second}


@torch.no_grad()
def evaluate(
    task: Task, loader: BatchLoader, channels_last: bool = False, prefix: str = "val"
) -> dict[str, float]:
    """Example-weighted means of the task's eval metrics over a whole split."""
    task.model.eval()
    totals: dict[str, float] = defaultdict(float)
    seen = 0
    for x, y in loader:
        for name, value in task.eval_step(prepare_batch(x, channels_last), y).items():
            totals[name] += value * len(y)
        seen += len(y)
    return {f"{prefix}_{name}": total / seen for name, total in totals.items()}


@torch.no_grad()
def predict_classes(
    model: nn.Module, loader: BatchLoader, channels_last: bool = False
) -> tuple[torch.Tensor, ...]:
    """(predicted, target) class indices over a whole split."""
    model.eval()
    predicted, target = [], []
    for x, y in loader:
        predicted.append(predicted_class(model(prepare_batch(x, channels_last)).float()).cpu())
        target.append(y.cpu())
    return torch.cat(predicted), torch.cat(target)


def improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def training_state(task: Task, state: TrainState) -> dict[str, Any]:
    """Everything besides the weights that a resumed run needs."""
    return {
        "step": state.step,
        "epoch": state.epoch,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "task": task.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state()[1],
            "python": str(random.getstate()),
        },
    }


@dataclass
class Experiment:
    """Everything a run trains, built and checked before anything is written to disk."""

    cfg: RunConfig
    bundle: DataBundle
    loaders: Loaders
    model: nn.Module
    task: Task
    device: torch.device
    channels_last: bool
    bf16: bool


def build_experiment(cfg: RunConfig) -> Experiment:
    """Data, model, task and optimisers for ``cfg``; a user mistake raises here, before the run folder."""
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    bundle = load_data(cfg.data)
    loaders = build_loaders(cfg.data, bundle, cfg.train.seed, device)
    in_shape = tuple(bundle.train.x.shape[1:])
    model = create_model(
        cfg.model.name, len(bundle.classes), in_shape, cfg.model.init, **cfg.model.model_kwargs()
    )
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = resolve_toggle(cfg.train.channels_last, auto=has_conv and device.type == "cuda")
    bf16 = resolve_toggle(cfg.train.bf16, auto=bf16_supported(device))
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    task: Task = TASKS.get(cfg.task.name)(model, cfg, len(bundle.classes))
    splits = ["train", "val"] if loaders.val is not None else ["train"]
    monitorable = [f"{split}_{name}" for split in splits for name in task.metric_names()]
    if cfg.train.monitor not in monitorable:
        hint = " (data.val_fraction=0 leaves no validation split)" if loaders.val is None else ""
        raise ValueError(
            f"train.monitor={cfg.train.monitor} is not a metric of this run{hint}: "
            f"choose one of {', '.join(monitorable)}"
        )
    epoch_steps = len(loaders.train)
    total_steps = cfg.train.epochs * epoch_steps
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    task.configure_optimizers(epoch_steps, total_steps)
    if bf16:
        task.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return Experiment(cfg, bundle, loaders, model, task, device, channels_last, bf16)


def run_info(exp: Experiment) -> dict[str, Any]:
    """The facts of a run that ``run.json`` records (updated again when it ends)."""
    loaders = exp.loaders
    return {
        "recipe": exp.cfg.recipe,
        "status": "running",
        "started": runinfo.now(),
        "dlzoo_version": runinfo.version(),
        "git_revision": runinfo.git_revision(),
        "seed": exp.cfg.train.seed,
        "machine": runinfo.machine_info(exp.device),
        "precision": {"bf16_autocast": exp.bf16, "channels_last": exp.channels_last},
        "data": {
            "source": exp.bundle.source,
            "classes": exp.bundle.classes,
            "in_shape": list(exp.bundle.train.x.shape[1:]),
            "train": loaders.train.num_examples,
            "val": loaders.val.num_examples if loaders.val else 0,
            "test": loaders.test.num_examples,
        },
        "normalizer": loaders.normalizer.to_dict(),
        "parameters": sum(p.numel() for p in exp.model.parameters()),
    }


def checkpoint_epoch(exp: Experiment, state: TrainState, row: dict[str, float], folder: Path) -> None:
    """Save ``best`` when the monitored metric improved, and ``last`` always."""
    train_cfg = exp.cfg.train
    if improved(row[train_cfg.monitor], state.best, train_cfg.monitor_mode):
        state.best, state.best_epoch, state.bad_epochs = row[train_cfg.monitor], state.epoch, 0
        save_checkpoint(folder, "best", exp.model, training_state(exp.task, state))
    else:
        state.bad_epochs += 1
    save_checkpoint(folder, "last", exp.model, training_state(exp.task, state))


def measure_test(
    exp: Experiment, state: TrainState, run_dir: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """Load the chosen checkpoint and measure the test split, once; writes confusion.json."""
    tag = exp.cfg.train.test_checkpoint
    load_weights(run_dir / "checkpoints", tag, exp.model)
    test = evaluate(exp.task, exp.loaders.test, exp.channels_last, prefix="test")
    if exp.cfg.task.name == "classify":
        predicted, target = predict_classes(exp.model, exp.loaders.test, exp.channels_last)
        matrix = confusion_matrix(predicted, target, len(exp.bundle.classes)).tolist()
        runinfo.write_json(run_dir / "confusion.json", {"classes": exp.bundle.classes, "matrix": matrix})
    return test, {"tag": tag, "epoch": state.best_epoch if tag == "best" else state.epoch}


def train(
    cfg: RunConfig, quiet: bool = False, on_epoch_end: Callable[[dict[str, Any]], None] | None = None
) -> RunResult:
    """Train ``cfg`` end to end and measure the test split once; returns the run folder and results.

    ``on_epoch_end(row)`` sees each epoch's metrics row after it is logged and checkpointed;
    raising ``StopRun`` from it ends the run early (marked ``stopped``, no test measurement).
    """
    exp = build_experiment(cfg)
    run_dir = runinfo.new_run_dir(cfg.log.runs_dir, cfg.recipe)
    info = run_info(exp)
    runinfo.write_json(run_dir / "config.json", cfg.to_dict())
    runinfo.write_json(run_dir / "run.json", info)
    say = (lambda *_: None) if quiet else print
    say(f"run folder {run_dir}  ({exp.bundle.source}; {info['parameters']:,} parameters; {exp.device})")

    metrics_file = MetricsFile(run_dir)
    board = TensorBoardLogger(run_dir, cfg.log.histograms) if cfg.log.tensorboard else None
    if board:
        x0, _ = next(iter(exp.loaders.test))
        images = exp.bundle.train.x[:32].float() / 255 if exp.bundle.train.is_image else None
        board.start(exp.model, prepare_batch(x0[:2], exp.channels_last), images)
    progress = ProgressBar(cfg.log.progress and not quiet)
    state, history, stopped_early = TrainState(), [], False
    started = time.perf_counter()
    try:
        while state.epoch < cfg.train.epochs:
            row = train_one_epoch(exp.task, exp.loaders.train, state, cfg, progress, exp.channels_last)
            if exp.loaders.val is not None:
                row.update(evaluate(exp.task, exp.loaders.val, exp.channels_last))
            state.epoch += 1
            row = {"epoch": state.epoch, "step": state.step, "lr": exp.task.lr, **row}
            history.append(row)
            metrics_file.append(row)
            if board:
                board.epoch_end(
                    exp.model, {k: v for k, v in row.items() if k not in ("epoch", "step")}, state.epoch
                )
            checkpoint_epoch(exp, state, row, run_dir / "checkpoints")
            say(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            patience = cfg.train.early_stopping_patience
            if patience and state.bad_epochs >= patience:
                say(f"early stop: {cfg.train.monitor} did not improve for {patience} epochs")
                stopped_early = True
                break
            if on_epoch_end is not None:
                on_epoch_end(row)
            if cfg.train.max_steps and state.step >= cfg.train.max_steps:
                break
    except StopRun:
        info.update(status="stopped", finished=runinfo.now(), epochs_run=state.epoch)
        runinfo.write_json(run_dir / "run.json", info)
        raise
    except NonFiniteLossError as error:
        info.update(status="failed", error=str(error), finished=runinfo.now())
        runinfo.write_json(run_dir / "run.json", info)
        kept = f"the last good checkpoint is {run_dir / 'checkpoints' / 'last'} (epoch {state.epoch})"
        raise TrainingError(
            f"training stopped at epoch {state.epoch + 1}, step {state.step + 1}: {error}; "
            f"{kept if state.epoch else 'no checkpoint was written'}. "
            "Try a lower optim.lr or set optim.grad_clip"
        ) from None
    train_seconds = time.perf_counter() - started

    test, tested = measure_test(exp, state, run_dir)
    info.update(
        status="finished",
        finished=runinfo.now(),
        train_seconds=round(train_seconds, 2),
        epochs_run=state.epoch,
        test_checkpoint=tested,
        test=test,
    )
    runinfo.write_json(run_dir / "run.json", info)
    if cfg.log.plots:
        plot_curves(history, run_dir / "curves.png", f"{cfg.recipe} (seed {cfg.train.seed})")
    if board:
        board.finish(
            {
                "model": cfg.model.name,
                "optim": cfg.optim.name,
                "lr": cfg.optim.lr,
                **cfg.model.model_kwargs(),
            },
            test,
        )
    return RunResult(run_dir=run_dir, test=test, history=history, stopped_early=stopped_early)
