"""Matplotlib figures of a run: the notes' two side-by-side curves (loss, accuracy), the learning
rate, the confusion matrix, and the validation curves of several runs overlaid.

Each ``*_figure`` function returns an open figure; ``save_figure`` writes it (to a path or a
buffer) and closes it, so callers never leak figures.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MAX_ANNOTATED_CLASSES = 20
"""Confusion matrices up to this many classes print the count in every cell; larger ones are colour only."""
MAX_MARKED_EPOCHS = 40
"""Curves with more points than this are drawn without a marker per epoch."""


def save_figure(figure: Figure, target: Path | BinaryIO, dpi: int = 100) -> None:
    """Save ``figure`` as PNG to a path or a binary buffer, then close it."""
    try:
        figure.savefig(target, format="png", dpi=dpi)
    finally:
        plt.close(figure)


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """The PNG bytes of ``figure`` (closed afterwards)."""
    buffer = io.BytesIO()
    save_figure(figure, buffer, dpi)
    return buffer.getvalue()


def _epoch_axis(axes: plt.Axes) -> None:
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.2"
    axes.grid(alpha=0.3)


def _line(axes: plt.Axes, rows: list[dict[str, Any]], key: str, marker: str = "o", **style: Any) -> None:
    """Plot ``key`` per epoch from the rows that have it; markers only while they stay readable."""
    points = [(row["epoch"], row[key]) for row in rows if key in row]
    if points:
        shown = marker if len(points) <= MAX_MARKED_EPOCHS else ""
        axes.plot(*zip(*points), marker=shown, markersize=4, **style)


def curves_figure(rows: list[dict[str, Any]], title: str) -> Figure:
    """Loss (left) and accuracy (right) per epoch, train and validation."""
    figure, (loss_axes, acc_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, metric in ((loss_axes, "loss"), (acc_axes, "accuracy")):
        for split, marker in (("train", "o"), ("val", "s")):
            label = "Training" if split == "train" else "Validation"
            _line(axes, rows, f"{split}_{metric}", marker, label=label)
        axes.set_title(f"{'Loss' if metric == 'loss' else 'Accuracy'}")
        _epoch_axis(axes)
        if axes.lines:
            axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss (left) and accuracy (right) per epoch, train and validation, saved as PNG."""
    save_figure(curves_figure(rows, title), path)
    return path


def lr_figure(rows: list[dict[str, Any]], title: str) -> Figure:
    """The learning rate at the end of each epoch (the schedule steps per optimiser step)."""
    figure, axes = plt.subplots(figsize=(5.5, 3.2))
    _line(axes, rows, "lr", color="tab:green")
    axes.set_title(title)
    _epoch_axis(axes)
    axes.set_ylabel("learning rate")
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    figure.tight_layout()
    return figure


def confusion_figure(classes: list[str], matrix: list[list[int]], title: str) -> Figure:
    """Counts of (true class, predicted class) as an image; rows are the true class."""
    n = len(classes)
    side = min(max(4.0, 0.45 * n + 2.0), 14.0)
    figure, axes = plt.subplots(figsize=(side + 1.0, side))
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(n), classes, rotation=90 if max(map(len, classes), default=0) > 3 else 0)
    axes.set_yticks(range(n), classes)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if n <= MAX_ANNOTATED_CLASSES:
        peak = max((max(row) for row in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                colour = "white" if count > peak / 2 else "black"
                axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    return figure


def compare_figure(runs: list[tuple[str, list[dict[str, Any]]]]) -> Figure:
    """Validation loss (left) and accuracy (right) of several runs, one line per run."""
    figure, (loss_axes, acc_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    for axes, metric in ((loss_axes, "val_loss"), (acc_axes, "val_accuracy")):
        for label, rows in runs:
            _line(axes, rows, metric, label=label)
        axes.set_title("Validation loss" if metric == "val_loss" else "Validation accuracy")
        _epoch_axis(axes)
        if axes.lines:
            axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
