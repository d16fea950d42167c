"""Matplotlib figures of a run: the notes' two side-by-side curves (loss, accuracy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss (left) and accuracy (right) per epoch, train and validation, saved as PNG."""
    epochs = [row["epoch"] for row in rows]
    figure, (loss_axes, acc_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, metric in ((loss_axes, "loss"), (acc_axes, "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{metric}"
            points = [(e, row[key]) for e, row in zip(epochs, rows) if key in row]
            if points:
                axes.plot(*zip(*points), style, label=f"{'Training' if split == 'train' else 'Validation'}")
        axes.set_title(f"{'Loss' if metric == 'loss' else 'Accuracy'}")
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
