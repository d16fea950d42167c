"""The in-memory data types every data set loader returns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Split:
    """One split held in memory.

    ``x`` is uint8 (N, C, H, W) for images or float32 (N, D) for tabular
    features; ``y`` is int64 (N,) class indices (float32 for regression).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4


@dataclass
class DataBundle:
    """What a registered data set loader returns: train and test splits plus names."""

    train: Split
    test: Split
    classes: list[str]
    """Class names, index i names label i."""
    source: str
    """Where the data came from, for the run log (e.g. 'MNIST IDX files in /data/mnist')."""


def default_data_dir() -> Path:
    """$DLZOO_DATA_DIR, else $XDG_CACHE_HOME/dlzoo, else ~/.cache/dlzoo."""
    if os.environ.get("DLZOO_DATA_DIR"):
        return Path(os.environ["DLZOO_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dlzoo"


def resolve_data_dir(data_dir: str) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()
