"""Data-parallel training: DistributedDataParallel (DDP) over ``torch.distributed``.

``torchrun --nproc-per-node N -m dlzoo train RECIPE`` starts N processes; torchrun sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in each, and ``from_environment`` reads them. The
loop then works like this (``dlzoo.training.loop``):

- Every process builds the same data, model and optimiser from the same seed. Rank 0 loads
  the data first (so a first run decodes and caches it once), the others after it.
- The training loader takes each global batch of ``data.batch_size`` examples, exactly the
  batch one process would take, and gives rank r its r-th equal part (the batch size must
  divide by N; the last, incomplete batch of an epoch is dropped). Augmentation is drawn for
  the whole global batch, so the data match a one-process run example for example.
- DDP averages the gradients over the processes after every backward pass, so every
  process takes the same optimiser step: with the same global batch, the same training as
  one process, up to the order of floating-point sums (and batch-norm statistics, which are
  per process unless ``train.sync_batchnorm=true``).
- Metrics are sums over examples, all-reduced: every process sees the same epoch row, and so
  takes the same decisions (best checkpoint, early stopping). Validation is sharded too.
- Only rank 0 writes: the run folder, metrics, TensorBoard, checkpoints (with every rank's
  RNG state, gathered), plots, and it alone measures the test split at the end.
- Resume: rank 0 reads the checkpoint and broadcasts the training state; DDP broadcasts
  rank 0's weights when it wraps the model. Ctrl-C on any process stops all of them at the
  same batch (the stop request is all-reduced where the host reads the step metrics, each
  step on the CPU).

Backends: gloo on the CPU, NCCL on CUDA GPUs (one GPU a process, ``cuda:LOCAL_RANK``).
``torch.nn.SyncBatchNorm`` runs on GPUs only; on the CPU ``SyncBatchNormCPU`` below does the
same with differentiable all-reduces.

Why DDP and not ``nn.DataParallel`` (the notes' example): DataParallel is one process that
copies the model to every GPU on every step, scatters the batch and gathers the outputs on
the first GPU, all under one Python interpreter's lock; it is single-machine only and
PyTorch recommends DDP instead. DDP is one process per device, each with its own replica
and data, exchanging only gradients (overlapped with the backward pass), and the same code
runs on one machine or many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class Distributed:
    """Which process this is among how many (``world_size`` 1: no distribution at all)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    """The process's index on its own machine (which GPU it drives)."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def reduce_sums(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` summed over every process (unchanged for one process)."""
        if not self.enabled or not values:
            return dict(values)
        names = sorted(values)
        totals = torch.tensor(
            [float(values[name]) for name in names], dtype=torch.float64, device=collective_device()
        )
        dist.all_reduce(totals)
        reduced = dict(zip(names, totals.cpu().tolist()))
        return {name: reduced[name] for name in values}  # in the caller's order

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], device=collective_device())
        dist.all_reduce(value)
        return bool(value.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, by rank, on every process."""
        if not self.enabled:
            return [obj]
        boxes: list[Any] = [None] * self.world_size
        dist.all_gather_object(boxes, obj)
        return boxes

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def sum_over_processes(values: dict[str, float], world_size: int) -> dict[str, float]:
    """``values`` summed over the ``world_size`` processes of the process group (as they are for 1)."""
    if world_size == 1:
        return dict(values)
    return Distributed(dist.get_rank(), world_size).reduce_sums(values)


def collective_device() -> torch.device:
    """Where tensors for collectives live: the process's GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def from_environment() -> Distributed:
    """This process's place, from torchrun's variables (none set: a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise ValueError(
            f"WORLD_SIZE={world_size} but RANK is missing or not a number: start distributed runs "
            "with torchrun (torchrun --nproc-per-node N -m dlzoo train RECIPE)"
        ) from None
    return Distributed(rank, world_size, local_rank)


def start(ctx: Distributed, device: torch.device) -> torch.device:
    """Join the process group (gloo on CPU, NCCL on CUDA); returns this process's device."""
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"distributed training runs on cpu or cuda, not {device.type}; set train.device")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def finish(ctx: Distributed) -> None:
    """Leave the process group once every process is done."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_batch_size(ctx: Distributed, batch_size: int) -> None:
    if ctx.enabled and batch_size % ctx.world_size:
        raise ValueError(
            f"data.batch_size={batch_size} (the global batch) does not split evenly over "
            f"{ctx.world_size} processes: use a multiple of {ctx.world_size}"
        )


class SyncBatchNormCPU(_BatchNorm):
    """Batch norm whose training statistics are those of the global batch, over every process,
    on the CPU (``torch.nn.SyncBatchNorm`` needs GPUs). Each process sums x and x^2 per channel;
    one differentiable all-reduce adds them up, so gradients flow through the global mean and
    variance exactly as in one process with the whole batch. Evaluation uses the running
    statistics, as plain batch norm does. Parameter and buffer names are batch norm's, so
    checkpoints load into either."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (B, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        values = x.float()
        count = torch.tensor([values.numel() / channels], dtype=torch.float32)
        totals = all_reduce(torch.cat([values.sum(dims), (values * values).sum(dims), count]))
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels : 2 * channels] / n - mean * mean).clamp(min=0)  # (C,) biased
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (values - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every batch-norm layer of ``model`` made synchronous across processes (in place)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, SyncBatchNormCPU):
            synced = SyncBatchNormCPU(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            for parameter, old in zip(synced.parameters(), child.parameters()):
                parameter.requires_grad_(old.requires_grad)
            setattr(model, name, synced)
        else:
            convert_sync_batchnorm(child, device)
    return model


def wrap(model: nn.Module, ctx: Distributed, device: torch.device) -> nn.Module:
    """``model`` in DDP (which broadcasts rank 0's weights and buffers to every process now)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
