"""Checkpoints: weights in safetensors, the rest of the training state beside them.

``<dir>/<tag>.safetensors`` holds the model's state dict (weights and buffers),
``<dir>/<tag>.state.pt`` holds optimiser, schedule, counters and RNG states as
plain tensors and containers, loadable with ``weights_only=True`` (no
arbitrary code is unpickled). Both files are written to temporary names,
fsynced, then renamed, so a crash mid-write leaves the previous checkpoint
intact; each records the step it belongs to and a mismatched pair is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dlzoo.errors import CheckpointError


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def save_checkpoint(folder: Path, tag: str, model: nn.Module, state: dict[str, Any]) -> None:
    """Write ``model`` weights and training ``state`` (must hold an int ``step``) atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    weights, extra = folder / f"{tag}.safetensors", folder / f"{tag}.state.pt"
    tmp_weights, tmp_extra = weights.with_suffix(".safetensors.tmp"), extra.with_suffix(".pt.tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    try:
        save_file(tensors, str(tmp_weights), metadata={"step": str(state["step"]), "format": "dlzoo"})
        torch.save(state, tmp_extra)
        _fsync_replace(tmp_weights, weights)
        _fsync_replace(tmp_extra, extra)
    finally:
        for tmp in (tmp_weights, tmp_extra):
            tmp.unlink(missing_ok=True)


def load_weights(folder: Path, tag: str, model: nn.Module) -> int:
    """Load ``<tag>.safetensors`` into ``model``; returns the step it was saved at."""
    path = folder / f"{tag}.safetensors"
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint {path}: expected a run folder with checkpoints/{tag}.safetensors"
        )
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as reader:
            metadata = reader.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is unreadable ({error}); it may be truncated") from None
    if metadata.get("format") != "dlzoo":
        raise CheckpointError(f"{path} is not a dlzoo checkpoint")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit this model: {first}") from None
    return int(metadata["step"])


def load_checkpoint(folder: Path, tag: str, model: nn.Module) -> dict[str, Any]:
    """Load weights into ``model`` and return the training state saved with them."""
    step = load_weights(folder, tag, model)
    path = folder / f"{tag}.state.pt"
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint state {path} is missing") from None
    except Exception as error:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"checkpoint state {path} is unreadable ({type(error).__name__})") from None
    if state.get("step") != step:
        raise CheckpointError(
            f"{path} (step {state.get('step')}) does not belong to its weights (step {step})"
        )
    return state
