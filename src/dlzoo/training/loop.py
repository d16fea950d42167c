"""One training loop for every task.

``train(cfg)`` builds data, model and task from a ``RunConfig``, then runs
``train_one_epoch`` and ``evaluate`` per epoch, logging, checkpointing
(``last`` every epoch, ``best`` by the monitored metric) and stopping early
when asked. The test split is measured once, at the end, with the weights
``train.test_checkpoint`` names.

Started by torchrun, the same loop trains data-parallel: see ``dlzoo.training.distributed``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import threading
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
from dlzoo.data.core import DataBundle, Split
from dlzoo.data.loader import BatchLoader, mix_seed, resize_batch
from dlzoo.data.pipeline import Loaders, build_loaders, load_data
from dlzoo.errors import CheckpointError, StopRun, TrainingError, TrainingInterrupted
from dlzoo.models import check_image_size, create_model
from dlzoo.registry import TASKS
from dlzoo.report.plots import plot_curves
from dlzoo.tasks import NonFiniteLossError, Task
from dlzoo.tasks.classify import confusion_matrix, predicted_class
from dlzoo.training import distributed
from dlzoo.training import run as runinfo
from dlzoo.training.allocator import freed_memory_kept
from dlzoo.training.callbacks import MetricsFile, ProgressBar, TensorBoardLogger
from dlzoo.training.checkpoint import (
    checkpoint_name,
    complete_checkpoints,
    load_checkpoint,
    load_weights,
    prune,
    read_pointer,
    set_pointer,
    whole_epoch,
    write_checkpoint,
)
from dlzoo.training.distributed import Distributed, sum_over_processes
from dlzoo.training.finetune import freeze, load_initial_weights, set_train_mode, unchanged
from dlzoo.training.resume import RunLock

FIT_TO_DATA_IMAGES = 5000
"""A model with ``fit_to_data`` is fitted to this many normalised training images (the first ones)."""


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
    best_checkpoint: str = ""
    """Name of the checkpoint folder with the best monitored value."""
    bad_epochs: int = 0
    """Epochs since the monitored value last improved (early stopping)."""
    batch: int = 0
    """Batches done in the current, unfinished epoch (non-zero only in a mid-epoch checkpoint)."""
    partial: dict[str, float] = field(default_factory=dict)
    """Example-weighted sums of the step metrics over those batches, and ``seen`` examples."""
    train_seconds: float = 0.0
    """Training time so far, over every session of the run."""


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


ACCELERATOR_SYNC_EVERY = 50


def sync_interval(sync_every: int, device: torch.device) -> int:
    """Steps between host reads of the step metrics: ``train.sync_every``, or by default every
    step on the CPU (a read costs nothing there) and every 50 on an accelerator (a read waits
    until its queue of kernels has run)."""
    if sync_every:
        return sync_every
    return 1 if device.type == "cpu" else ACCELERATOR_SYNC_EVERY


class StepSums:
    """Example-weighted sums of step metrics since the host last read them. They stay on the
    device, so adding a step's metrics queues two kernels and never waits for them."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.examples = 0

    def add(self, metrics: dict[str, torch.Tensor], examples: int) -> None:
        for name, value in metrics.items():
            weighted = value.detach().float() * examples
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
        self.examples += examples

    def read(self) -> dict[str, float]:
        """The sums on the host (one copy for all of them, the only wait), and ``seen``, the
        examples they cover; empties them."""
        names = list(self.sums)
        values = torch.stack([self.sums[name] for name in names]).tolist() if names else []
        read = {**dict(zip(names, values)), "seen": float(self.examples)}
        self.sums, self.examples = {}, 0
        return read


def read_step_sums(pending: StepSums, totals: dict[str, float], after_step: int, step: int) -> float:
    """Adds the pending sums of steps ``after_step + 1 .. step`` to ``totals`` and returns their
    mean loss; a NaN or infinite loss in any of them stops training before anything is saved."""
    sums = pending.read()
    if not np.isfinite(sums["loss"]):
        steps = f"step {step}" if step == after_step + 1 else f"one of steps {after_step + 1}-{step}"
        raise NonFiniteLossError(f"the training loss became {sums['loss']} at {steps}")
    for name, value in sums.items():
        totals[name] += value
    return sums["loss"] / sums["seen"]


class GracefulStop:
    """Ctrl-C and SIGTERM ask the loop to stop at the next batch boundary, where the state is
    consistent (weights, optimiser and counters all after the same step) and can be saved.
    A second Ctrl-C exits at once without saving; the last epoch checkpoint is still there."""

    def __init__(self, ctx: Distributed | None = None) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}
        self.ctx = ctx or Distributed()

    def should_stop(self) -> bool:
        """Whether a stop was asked for, here or (data-parallel) in any other process, so that
        every process stops after the same batch."""
        return self.ctx.any(self.requested)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise SystemExit(130)
        self.requested = True

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for kind in (signal.SIGINT, signal.SIGTERM):
                self.previous[kind] = signal.signal(kind, self._handle)

    def restore(self) -> None:
        for kind, handler in self.previous.items():
            signal.signal(kind, handler)


def train_one_epoch(
    task: Task,
    loader: BatchLoader,
    state: TrainState,
    cfg: RunConfig,
    progress: ProgressBar,
    channels_last: bool,
    stop: GracefulStop | None = None,
) -> dict[str, float]:
    """One pass over the training split (from ``state.batch`` on, after a mid-epoch stop);
    returns the example-weighted means of the step metrics."""
    set_train_mode(task.model)  # frozen batch-norm layers stay in eval mode
    loader.set_epoch(state.epoch, start_batch=state.batch)
    # after a mid-epoch stop, state.partial holds every process's sums: rank 0 carries them on
    totals: dict[str, float] = defaultdict(float, state.partial if loader.rank == 0 else {})
    progress.start_epoch(state.epoch + 1, cfg.train.epochs, len(loader) - state.batch)
    every = sync_interval(cfg.train.sync_every, loader.device)
    pending, read_at = StepSums(), state.step  # the step metrics since the host last read them
    for x, y in loader:
        # a stop is taken where the host has read every step (every step on the CPU), so that
        # the batches done so far are in `totals`, for a mid-epoch checkpoint
        if stop is not None and state.step == read_at and stop.should_stop():
            state.partial = sum_over_processes(totals, loader.world_size)
            raise KeyboardInterrupt
        pending.add(task.train_step(prepare_batch(x, channels_last), y), len(y))
        state.step += 1
        state.batch += 1
        out_of_steps = bool(cfg.train.max_steps) and state.step >= cfg.train.max_steps
        last = out_of_steps or state.batch == len(loader)  # the epoch's last step
        if not last:  # its gradients stay, for the epoch's histograms; the others are freed now,
            # not when the next step starts: else they are held through its forward pass,
            # beside its activations (AlexNet: 218 MiB at the peak)
            task.model.zero_grad(set_to_none=True)
        loss = None
        if state.step % every == 0 or last:
            loss = read_step_sums(pending, totals, read_at, state.step)
            read_at = state.step
        progress.advance(len(y), loss)
        if out_of_steps:
            break
    samples_per_second = sum_over_processes({"samples": progress.end_epoch()}, loader.world_size)["samples"]
    totals = sum_over_processes(totals, loader.world_size)  # data-parallel: every process's examples
    seen = totals.pop("seen")
    state.batch, state.partial = 0, {}
    means = {f"train_{name}": total / seen for name, total in totals.items()}
    return {**means, "samples_per_second": samples_per_second}


class ClassPredictions:
    """The predicted and the true class of every example of a split, gathered batch by batch;
    (N,) each, or (N, heads) for a multi-head model."""

    def __init__(self) -> None:
        self.predicted: list[torch.Tensor] = []
        self.target: list[torch.Tensor] = []

    def add(self, outputs: torch.Tensor, y: torch.Tensor) -> None:
        predicted = outputs.argmax(dim=-1) if outputs.dim() == 3 else predicted_class(outputs)
        self.predicted.append(predicted.cpu())
        self.target.append(y.cpu())

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(self.predicted), torch.cat(self.target)


@torch.no_grad()
def evaluate(
    task: Task,
    loader: BatchLoader,
    channels_last: bool = False,
    prefix: str = "val",
    predictions: ClassPredictions | None = None,
) -> dict[str, float]:
    """Example-weighted means of the task's eval metrics over a whole split (over every
    process's part of it, for a sharded loader); with ``predictions``, the same forward
    passes also fill it with this process's predicted classes."""
    task.model.eval()
    sums = StepSums()
    for x, y in loader:
        outputs, metrics = task.eval_step(prepare_batch(x, channels_last), y)
        sums.add(metrics, len(y))
        if predictions is not None:
            predictions.add(outputs, y)
    totals: dict[str, float] = defaultdict(float, sums.read())  # the one wait for the device
    if loader.world_size > 1:  # a process with no part of the split still adds its zeros
        names = [*task.metric_names(), "seen"]
        totals = sum_over_processes({name: totals[name] for name in names}, loader.world_size)
    seen = totals.pop("seen")
    return {f"{prefix}_{name}": total / seen for name, total in totals.items()}


def improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def rng_state() -> dict[str, Any]:
    """This process's torch, numpy and python RNG states, as ``weights_only``-safe types."""
    numpy_state = np.random.get_state()
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "rest": list(numpy_state[2:])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def training_state(task: Task, state: TrainState, ctx: Distributed | None = None) -> dict[str, Any]:
    """Everything besides the weights that a resumed run needs, as ``weights_only``-safe types.
    Data-parallel, every process calls it: each one's RNG states are gathered (``rng["ranks"]``)."""
    ctx = ctx or Distributed()
    rng = rng_state()
    if ctx.enabled:
        rng = {**rng, "ranks": ctx.gather(rng)}
    return {**dataclasses.asdict(state), "task": task.state_dict(), "rng": rng}


def restore_state(task: Task, saved: dict[str, Any], rank: int = 0) -> TrainState:
    """Put optimisers, schedules and RNGs back as they were (process ``rank``'s RNGs, for a
    data-parallel checkpoint); returns the counters."""
    task.load_state_dict(saved["task"])
    rng = saved["rng"]
    if "ranks" in rng:
        if rank >= len(rng["ranks"]):
            raise CheckpointError(
                f"this checkpoint was saved by {len(rng['ranks'])} processes; resume it with at most as many"
            )
        rng = rng["ranks"][rank]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(("MT19937", rng["numpy"]["keys"].numpy().astype(np.uint32), *rng["numpy"]["rest"]))
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    names = {f.name for f in dataclasses.fields(TrainState)}
    return TrainState(**{k: v for k, v in saved.items() if k in names})


def check_progressive_sizes(model: nn.Module, name: str, in_shape: tuple[int, ...], sizes: list[int]) -> None:
    """Raise ``ValueError`` unless model ``name`` takes images of every size in ``sizes``
    (``data.progressive_sizes``): large enough for it, and a net that pools globally rather than
    one whose flattened features fit a single input size. One eval-mode pass of one image each."""
    smallest = min(sizes)
    check_image_size(name, (*in_shape[:-2], smallest, smallest), "data.progressive_sizes")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for size in sorted(set(sizes)):
                model(torch.zeros(1, *in_shape[:-2], size, size))
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise ValueError(
            f"data.progressive_sizes: model {name!r} cannot take {size}x{size} images ({reason}); "
            "progressive resizing needs a model that pools globally, such as airbench or resnet20"
        ) from None
    finally:
        model.train(was_training)


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
    transfer: dict[str, Any]
    """Fine-tuning facts: where the initial weights came from, which parameters are frozen."""
    dist: Distributed = field(default_factory=Distributed)
    """This process's place in a data-parallel run (a single process by default)."""


def build_experiment(cfg: RunConfig, ctx: Distributed | None = None) -> Experiment:
    """Data, model, task and optimisers for ``cfg``; a user mistake raises here, before the run folder.

    Data-parallel (``ctx``), every process builds the same experiment; rank 0 loads the data
    first, so that a data set decoded on first use is decoded and cached once."""
    ctx = ctx or Distributed()
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = distributed.start(ctx, pick_device(cfg.train.device))
    distributed.check_batch_size(ctx, cfg.data.batch_size)
    if not ctx.is_main:
        ctx.barrier()
    bundle = load_data(cfg.data)
    if ctx.is_main:
        ctx.barrier()
    loaders = build_loaders(cfg.data, bundle, cfg.train.seed, device, shard=(ctx.rank, ctx.world_size))
    # The loaders hold the training and validation parts as copies: keep only the training part,
    # not the whole split a second time (147 MiB for CIFAR-10's 50,000 training images).
    bundle = dataclasses.replace(bundle, train=Split(loaders.train.x, loaders.train.y))
    in_shape = loaders.train.example_shape  # after data.resize, which the loaders apply per batch
    model = create_model(
        cfg.model.name, len(bundle.classes), in_shape, cfg.model.init, **cfg.model.model_kwargs()
    )
    if cfg.data.progressive_sizes:
        check_progressive_sizes(model, cfg.model.name, in_shape, cfg.data.progressive_sizes)
    if hasattr(model, "fit_to_data") and loaders.train.is_image:  # a data-fitted layer (airbench's whitening)
        first = Split(loaders.train.x[:FIT_TO_DATA_IMAGES], loaders.train.y[:FIT_TO_DATA_IMAGES])
        whole = BatchLoader(first, len(first), loaders.normalizer, device=device, resize=loaders.train.resize)
        model.fit_to_data(next(iter(whole))[0])
    transfer = {}
    if cfg.model.init_from:
        transfer = load_initial_weights(model, cfg.model.init_from, cfg.log.runs_dir)
    if cfg.model.freeze:
        transfer["frozen"] = freeze(model, cfg.model.freeze)
    if cfg.train.sync_batchnorm and ctx.enabled:
        distributed.convert_sync_batchnorm(model, device)
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
    if ctx.rank:  # the same weights everywhere (DDP broadcasts rank 0's), but each its own dropout
        torch.manual_seed(mix_seed(cfg.train.seed, ctx.rank))
    return Experiment(cfg, bundle, loaders, model, task, device, channels_last, bf16, transfer, ctx)


def run_info(exp: Experiment) -> dict[str, Any]:
    """The facts of a run that ``run.json`` records (updated again when it ends)."""
    loaders = exp.loaders
    return {
        "recipe": exp.cfg.recipe,
        "status": "running",
        "started": runinfo.now(),
        "command": runinfo.command_line(),
        "dlzoo_version": runinfo.version(),
        "git_revision": runinfo.git_revision(),
        "seed": exp.cfg.train.seed,
        "machine": runinfo.machine_info(exp.device),
        "precision": {"bf16_autocast": exp.bf16, "channels_last": exp.channels_last},
        "data": {
            "source": exp.bundle.source,
            "classes": exp.bundle.classes,
            "in_shape": list(loaders.train.example_shape),
            "train": loaders.train.num_examples,
            "val": loaders.val.num_examples if loaders.val else 0,
            "test": loaders.test.num_examples,
        },
        "normalizer": loaders.normalizer.to_dict(),
        **(
            {
                "distributed": {
                    "world_size": exp.dist.world_size,
                    "backend": torch.distributed.get_backend(),
                    "sync_batchnorm": exp.cfg.train.sync_batchnorm,
                }
            }
            if exp.dist.enabled
            else {}
        ),
        "parameters": sum(p.numel() for p in exp.model.parameters()),
        "trainable_parameters": sum(p.numel() for p in exp.model.parameters() if p.requires_grad),
        **({"transfer": exp.transfer} if exp.transfer else {}),
    }


def save_progress(exp: Experiment, state: TrainState, folder: Path, improved_now: bool = False) -> None:
    """Write a checkpoint of this moment, point ``last`` (and ``best`` if it improved) at it,
    then drop checkpoints nothing keeps. The order matters for crash safety: a pointer only
    ever names a folder that is complete on disk."""
    name = checkpoint_name(state.epoch, state.batch)
    if improved_now:
        state.best_checkpoint = name
    saved = training_state(exp.task, state, exp.dist)  # data-parallel: gathers every process's RNGs
    if not exp.dist.is_main:  # rank 0 writes for all
        return
    previous = read_pointer(folder, "last")  # kept as the fallback should the new one be damaged
    write_checkpoint(folder, name, exp.model, saved)
    set_pointer(folder, "last", name)
    if improved_now:
        set_pointer(folder, "best", name)
    every, limit = exp.cfg.train.keep_every, exp.cfg.train.keep_limit
    periodic = [n for n in complete_checkpoints(folder) if every and (e := whole_epoch(n)) and e % every == 0]
    prune(folder, {name, previous, state.best_checkpoint, *(periodic[-limit:] if limit else periodic)})


def checkpoint_epoch(exp: Experiment, state: TrainState, row: dict[str, float], folder: Path) -> None:
    """After an epoch: update the best value and early-stopping count, then save."""
    train_cfg = exp.cfg.train
    better = improved(row[train_cfg.monitor], state.best, train_cfg.monitor_mode)
    if better:
        state.best, state.best_epoch, state.bad_epochs = row[train_cfg.monitor], state.epoch, 0
    else:
        state.bad_epochs += 1
    save_progress(exp, state, folder, improved_now=better)


def measure_test(
    exp: Experiment, state: TrainState, run_dir: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """Load the chosen checkpoint and measure the test split, once; writes confusion.json
    (for a multi-head task: of every head's predictions pooled)."""
    tag = exp.cfg.train.test_checkpoint
    exp.model.zero_grad(set_to_none=True)  # the last step's gradients: not needed, and loading needs room
    load_weights(run_dir / "checkpoints", tag, exp.model)
    classifies = exp.cfg.task.name in ("classify", "multitask")
    predictions = ClassPredictions() if classifies else None
    test = evaluate(exp.task, exp.loaders.test, exp.channels_last, prefix="test", predictions=predictions)
    if predictions is not None:
        predicted, target = predictions.tensors()
        matrix = confusion_matrix(predicted.flatten(), target.flatten(), len(exp.bundle.classes)).tolist()
        runinfo.write_json(run_dir / "confusion.json", {"classes": exp.bundle.classes, "matrix": matrix})
    return test, {"tag": tag, "epoch": state.best_epoch if tag == "best" else state.epoch}


def open_run(
    exp: Experiment, resume_from: Path | None
) -> tuple[Path, RunLock | None, dict[str, Any], TrainState]:
    """A new run folder, or the resumed one with its state restored; locked either way.

    Data-parallel, rank 0 makes or locks the folder and reads the checkpoint, and broadcasts
    the folder and the training state; the other processes hold no lock and no run facts."""
    cfg, ctx = exp.cfg, exp.dist
    lock, info, saved = None, {}, None
    run_dir = resume_from
    if ctx.is_main and resume_from is None:
        run_dir = runinfo.new_run_dir(cfg.log.runs_dir, cfg.recipe)
        lock = RunLock(run_dir)
        info = run_info(exp)
        runinfo.write_json(run_dir / "config.json", cfg.to_dict())
    elif ctx.is_main:
        lock = RunLock(run_dir)
        try:
            saved = load_checkpoint(run_dir / "checkpoints", "last", exp.model)
        except CheckpointError:
            lock.release()
            raise
        info = runinfo.read_json(run_dir / "run.json")
    run_dir, saved = ctx.broadcast((run_dir, saved))
    if saved is None:
        return run_dir, lock, info, TrainState()
    state = restore_state(exp.task, saved, ctx.rank)
    if ctx.is_main:
        if state.best_checkpoint:
            set_pointer(run_dir / "checkpoints", "best", state.best_checkpoint)
        resumed = {"at": runinfo.now(), "epoch": state.epoch, "batch": state.batch}
        info.setdefault("resumed", []).append(resumed)
        if cfg.to_dict() != runinfo.read_json(run_dir / "config.json"):
            runinfo.write_json(run_dir / "config.json", cfg.to_dict())  # resumed with --force
    return run_dir, lock, info, state


def step_model(exp: Experiment) -> nn.Module:
    """The model the training step calls: ``exp.model``, wrapped in DDP when data-parallel and
    compiled with ``train.compile``; the same parameters (checkpoints and evaluation use
    ``exp.model``)."""
    model = distributed.wrap(exp.model, exp.dist, exp.device) if exp.dist.enabled else exp.model
    return torch.compile(model) if exp.cfg.train.compile else model


def train(
    cfg: RunConfig,
    quiet: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    resume_from: Path | None = None,
) -> RunResult:
    """Train ``cfg`` end to end and measure the test split once; returns the run folder and results.

    ``resume_from`` continues that run folder from its ``last`` checkpoint, exactly: the
    result equals an uninterrupted run's. ``on_epoch_end(row)`` sees each epoch's metrics
    row after it is logged and checkpointed; raising ``StopRun`` from it ends the run early
    (marked ``stopped``, no test measurement).

    Started by torchrun (``WORLD_SIZE`` > 1), it trains data-parallel: every process returns
    the same result, and only rank 0 writes (``dlzoo.training.distributed``).
    """
    ctx = distributed.from_environment()
    exp = build_experiment(cfg, ctx)
    run_dir, lock, info, state = open_run(exp, resume_from)
    exp.task.step_model = step_model(exp)
    main = ctx.is_main
    checkpoints = run_dir / "checkpoints"
    info.update(status="running")
    write_info = (lambda: runinfo.write_json(run_dir / "run.json", info)) if main else (lambda: None)
    write_info()
    say = print if main and not quiet else (lambda *_: None)
    parameters = sum(p.numel() for p in exp.model.parameters())
    processes = f"; {ctx.world_size} processes" if ctx.enabled else ""
    say(
        f"run folder {run_dir}  ({exp.bundle.source}; {parameters:,} parameters; {exp.device}{processes})"
        + (f"; resumed at epoch {state.epoch + 1}" if resume_from else "")
    )

    metrics_file = MetricsFile(run_dir) if main else None
    history = metrics_file.keep_until(state.epoch) if metrics_file else []  # later rows are redone
    board = (
        TensorBoardLogger(run_dir, cfg.log.histograms, purge_step=state.epoch + 1)
        if cfg.log.tensorboard and main
        else None
    )
    if board and not resume_from:
        x0, _ = next(iter(exp.loaders.test))
        shown = exp.loaders.train  # its first 32 images, at the size the model takes
        images = resize_batch(shown.x[:32], shown.resize).cpu().float() / 255 if shown.is_image else None
        board.start(exp.model, prepare_batch(x0[:2], exp.channels_last), images)
    progress = ProgressBar(cfg.log.progress and not quiet and main)
    stopped_early = False
    stop = GracefulStop(ctx)
    stop.install()
    started = time.perf_counter() - state.train_seconds
    try:
        while state.epoch < cfg.train.epochs:
            start_epoch = getattr(exp.model, "start_epoch", None)  # a schedule of frozen parameters
            if start_epoch is not None and start_epoch(state.epoch) and ctx.enabled:
                exp.task.step_model = step_model(exp)  # DDP hooks the parameters training when wrapped
            with freed_memory_kept(cfg.train.reuse_memory):
                row = train_one_epoch(
                    exp.task, exp.loaders.train, state, cfg, progress, exp.channels_last, stop
                )
            if exp.loaders.val is not None:
                row.update(evaluate(exp.task, exp.loaders.val, exp.channels_last))
            state.epoch += 1
            state.train_seconds = time.perf_counter() - started
            row = {"epoch": state.epoch, "step": state.step, "lr": exp.task.lr, **row}
            history.append(row)
            if metrics_file:
                metrics_file.append(row)
            if board:
                board.epoch_end(
                    exp.model, {k: v for k, v in row.items() if k not in ("epoch", "step")}, state.epoch
                )
            checkpoint_epoch(exp, state, row, checkpoints)
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
    except KeyboardInterrupt:
        progress.end_epoch()
        state.train_seconds = time.perf_counter() - started
        if state.batch:  # inside an epoch: keep the batches done so far
            save_progress(exp, state, checkpoints)
        info.update(status="interrupted", interrupted=runinfo.now(), epochs_run=state.epoch)
        write_info()
        ctx.barrier()  # no process exits (and so no launcher stops the others) before rank 0 has written
        raise TrainingInterrupted(
            f"interrupted at epoch {state.epoch + 1}, batch {state.batch}; checkpoint saved. "
            f"Resume with: dlzoo train {cfg.recipe} --resume {run_dir}"
        ) from None
    except StopRun:
        info.update(status="stopped", finished=runinfo.now(), epochs_run=state.epoch)
        write_info()
        raise
    except NonFiniteLossError as error:
        info.update(status="failed", error=str(error), finished=runinfo.now())
        write_info()
        kept = f"the last good checkpoint is {checkpoints / 'last'} (epoch {state.epoch})"
        raise TrainingError(
            f"training stopped in epoch {state.epoch + 1}: {error}; "
            f"{kept if state.epoch else 'no checkpoint was written'}. "
            "Try a lower optim.lr or set optim.grad_clip"
        ) from None
    except CheckpointError as error:
        info.update(status="failed", error=str(error), finished=runinfo.now())
        write_info()
        raise TrainingError(str(error)) from None
    finally:
        stop.restore()
        if board:
            board.writer.flush()
        if lock:
            lock.release()

    if not main:  # rank 0 measures the test split alone; the others wait for its numbers
        test = ctx.broadcast(None)
        distributed.finish(ctx)
        return RunResult(run_dir=run_dir, test=test, history=history, stopped_early=stopped_early)

    if exp.transfer.get("frozen") and "init_from" in exp.transfer:  # evidence that frozen means frozen
        info["transfer"]["frozen_unchanged"] = unchanged(
            exp.model, exp.transfer["frozen"], exp.transfer["init_from"]
        )
    test, tested = measure_test(exp, state, run_dir)
    info.update(
        status="finished",
        finished=runinfo.now(),
        train_seconds=round(state.train_seconds, 2),
        peak_rss_mib=runinfo.peak_rss_mib(),
        epochs_run=state.epoch,
        test_checkpoint=tested,
        test=test,
    )
    runinfo.write_json(run_dir / "run.json", info)
    ctx.broadcast(test)
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
    distributed.finish(ctx)
    return RunResult(run_dir=run_dir, test=test, history=history, stopped_early=stopped_early)
