"""Checkpoints that survive a crash at any moment.

A checkpoint is a folder ``checkpoints/<name>/`` (``epoch-0007``, or
``epoch-0007-batch-0012`` for a mid-epoch stop) holding

- ``model.safetensors``: the model's state dict (weights and buffers), and
- ``state.pt``: optimiser, schedule, counters and RNG states as plain tensors
  and containers, loadable with ``weights_only=True`` (no arbitrary code is
  unpickled).

It is written into a temporary folder, every file fsynced, then renamed into
place in one step. The small pointer files ``checkpoints/last`` and
``checkpoints/best`` name the folder they mean and are replaced atomically
after the folder exists; old folders are deleted only after that. So a kill at
any point leaves the previous checkpoint intact, and a pointer whose folder is
unreadable (truncated, foreign) falls back to the newest good one.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dlzoo.errors import CheckpointError

WEIGHTS, STATE = "model.safetensors", "state.pt"
TAGS = ("last", "best")
_NAME = re.compile(r"^epoch-(\d+)(?:-batch-(\d+))?$")


def checkpoint_name(epoch: int, batch: int = 0) -> str:
    """``epoch-0007`` after a whole epoch, ``epoch-0007-batch-0012`` inside epoch 8."""
    return f"epoch-{epoch:04d}" + (f"-batch-{batch:04d}" if batch else "")


def whole_epoch(name: str) -> int | None:
    """The epoch of an end-of-epoch checkpoint name, None for mid-epoch or other names."""
    match = _NAME.match(name)
    return int(match.group(1)) if match and not match.group(2) else None


def _order(name: str) -> tuple[int, int]:
    match = _NAME.match(name)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (-1, -1)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def write_checkpoint(folder: Path, name: str, model: nn.Module, state: dict[str, Any]) -> Path:
    """Write checkpoint ``name`` atomically; ``state`` must hold an int ``step``.

    A full disk (or any OSError) removes the partial folder and raises ``CheckpointError``;
    the checkpoints already there are untouched.
    """
    folder.mkdir(parents=True, exist_ok=True)
    final, tmp = folder / name, folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    try:
        tmp.mkdir()
        save_file(tensors, str(tmp / WEIGHTS), metadata={"step": str(state["step"]), "format": "dlzoo"})
        torch.save(state, tmp / STATE)
        for path in (tmp / WEIGHTS, tmp / STATE, tmp):
            _fsync(path)
        if final.exists():  # rewriting the same name (a resumed run): move the old one aside first
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(folder)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = "the disk is full" if error.errno == errno.ENOSPC else f"{type(error).__name__}: {error}"
        raise CheckpointError(
            f"could not write checkpoint {final} ({reason}); the earlier checkpoints in {folder} are intact"
        ) from None
    return final


def set_pointer(folder: Path, tag: str, name: str) -> None:
    """Make ``checkpoints/<tag>`` (last or best) name checkpoint ``name``, atomically."""
    _write_text_atomic(folder / tag, name + "\n")


def read_pointer(folder: Path, tag: str) -> str | None:
    path = folder / tag
    return path.read_text().strip() if path.is_file() else None


def prune(folder: Path, keep: set[str]) -> None:
    """Delete checkpoint folders not in ``keep`` (and leftovers of interrupted writes)."""
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.is_dir() and path.name not in keep and (_NAME.match(path.name) or path.name.endswith(".tmp")):
            shutil.rmtree(path, ignore_errors=True)


def complete_checkpoints(folder: Path) -> list[str]:
    """Names of finished checkpoint folders, oldest first."""
    names = (
        [p.name for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name)] if folder.is_dir() else []
    )
    return sorted(names, key=_order)


def _read(path: Path, model: nn.Module | None, mmap: bool = False) -> tuple[int, dict[str, Any] | None]:
    """Load one checkpoint folder into ``model``; returns (step, state or None if model is None).

    ``mmap``: map the state file instead of reading it, for a caller that checks the state but
    does not use its tensors (the optimiser's moments can be twice the weights' size)."""
    weights = path / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {path} has no {WEIGHTS}")
    try:
        with safe_open(str(weights), framework="pt") as reader:
            metadata = reader.metadata() or {}
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {weights} is unreadable ({error}); it may be truncated") from None
    if metadata.get("format") != "dlzoo":
        raise CheckpointError(f"{weights} is not a dlzoo checkpoint")
    step = int(metadata["step"])
    state = None
    if model is not None:
        try:
            model.load_state_dict(tensors)
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise CheckpointError(f"checkpoint {weights} does not fit this model: {first}") from None
    try:
        state = torch.load(path / STATE, weights_only=True, map_location="cpu", mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no {STATE}") from None
    except Exception as error:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(
            f"checkpoint state {path / STATE} is unreadable ({type(error).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("step") != step:
        raise CheckpointError(f"{path / STATE} does not belong to its weights (step {step})")
    return step, state


def resolve(folder: Path, tag: str) -> Path:
    """The checkpoint folder ``tag`` names (no fallback, no loading)."""
    name = read_pointer(folder, tag)
    if name is None:
        raise CheckpointError(f"no {tag} checkpoint in {folder}: the run has not finished an epoch")
    return folder / name


def load_checkpoint(folder: Path, tag: str, model: nn.Module, mmap: bool = False) -> dict[str, Any]:
    """Load checkpoint ``tag`` into ``model`` and return its training state (mapped, not read,
    with ``mmap``).

    If ``last`` is unreadable, the newest older checkpoint that reads cleanly is used instead
    (with a note on stderr); a bad ``best`` is an error.
    """
    path = resolve(folder, tag)
    try:
        return _read(path, model, mmap)[1] or {}
    except CheckpointError as error:
        if tag != "last":
            raise
        older = [n for n in complete_checkpoints(folder) if _order(n) < _order(path.name)]
        for name in reversed(older):
            try:
                state = _read(folder / name, model, mmap)[1] or {}
            except CheckpointError:
                continue
            print(f"note: {error}; using the previous checkpoint {folder / name}", flush=True)
            return state
        raise


def load_weights(folder: Path, tag: str, model: nn.Module) -> int:
    """Load only the weights of checkpoint ``tag`` into ``model``; returns its step. The training
    state is checked but only mapped, never read into memory."""
    return int(load_checkpoint(folder, tag, model, mmap=True)["step"])
