"""What a run writes while it trains: the metrics file, TensorBoard events and the
progress bar. Each is a small class the loop calls at fixed points; none of them
changes training."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

HISTOGRAM_BINS = 30
"""Buckets of each TensorBoard histogram (tf.summary.histogram's default)."""


class MetricsFile:
    """One row per epoch, as JSON lines (``metrics.jsonl``) and CSV (``metrics.csv``)."""

    def __init__(self, run_dir: Path) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"

    def append(self, row: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        rows = self.read()
        columns = list(dict.fromkeys(key for r in rows for key in r))
        with open(self.csv, "w", newline="") as handle:  # rewritten: columns may grow
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def keep_until(self, epoch: int) -> list[dict[str, Any]]:
        """Drop rows after ``epoch`` (written after the checkpoint a resumed run starts from)."""
        rows = [row for row in self.read() if row["epoch"] <= epoch]
        if self.jsonl.exists():
            self.jsonl.unlink()
        self.csv.unlink(missing_ok=True)
        for row in rows:
            self.append(row)
        return rows

    def read(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]


class TensorBoardLogger:
    """Scalars, weight/gradient histograms, an input batch, the graph and hparams
    through ``torch.utils.tensorboard``; events go to ``<run>/tensorboard``."""

    def __init__(self, run_dir: Path, histograms: bool, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run discards events logged after its checkpoint
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)
        self.histograms = histograms

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            group, _, metric = name.partition("_")
            self.writer.add_scalar(f"{metric}/{group}" if metric else name, value, step)

    def start(self, model: nn.Module, example: torch.Tensor, images: torch.Tensor | None) -> None:
        """Log the graph (traced on ``example``) and a grid of input images in [0, 1]."""
        if images is not None:
            self.writer.add_images("inputs", images.float().clamp(0, 1), 0)
        try:
            with warnings.catch_warnings():  # torch.jit.trace's deprecation notice is not the user's concern
                warnings.simplefilter("ignore", FutureWarning)
                self.writer.add_graph(model, example)
        except Exception as error:  # tracing is best effort; the run must not die for a picture
            print(f"note: TensorBoard graph skipped ({type(error).__name__})")

    def epoch_end(self, model: nn.Module, values: dict[str, float], step: int) -> None:
        self.scalars(values, step)
        if self.histograms:
            for name, parameter in model.named_parameters():
                self.histogram(f"weights/{name}", parameter.detach(), step)
                if parameter.grad is not None:
                    self.histogram(f"gradients/{name}", parameter.grad, step)
        self.writer.flush()

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """A histogram of ``HISTOGRAM_BINS`` equal-width buckets, counted by torch in float32.
        (``SummaryWriter.add_histogram`` copies the values to float64 and sorts them: hundreds
        of MiB of peak memory and seconds an epoch for a layer of tens of millions of weights.)
        Non-finite values (a diverged run, which the loss check stops) are not logged."""
        values = values.detach().flatten().float().cpu()
        if not values.numel():
            return
        low, high = values.min().item(), values.max().item()
        if not (math.isfinite(low) and math.isfinite(high)):
            return
        if low == high:  # one value: one bucket (histc would take the range from the data)
            limits, counts = [high], [float(values.numel())]
        else:
            counts = torch.histc(values, bins=HISTOGRAM_BINS, min=low, max=high).tolist()
            limits = torch.linspace(low, high, HISTOGRAM_BINS + 1)[1:].tolist()  # right edges
        total, squares = values.sum().item(), values.dot(values).item()
        self.writer.add_histogram_raw(tag, low, high, values.numel(), total, squares, limits, counts, step)

    def finish(self, hparams: dict[str, Any], results: dict[str, float]) -> None:
        simple = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        self.writer.add_hparams(simple, {f"hparam/{k}": v for k, v in results.items()}, run_name=".")
        self.writer.close()


class ProgressBar:
    """A rich progress bar per epoch with ETA, running loss and samples/s; silent when off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stdout.isatty()  # a bar in a log file is noise
        self.progress: Progress | None = None

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.seen, self.started = 0, time.perf_counter()
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} samples/s"),
            transient=True,
        )
        self.progress.start()
        self.task_id = self.progress.add_task(
            "", total=batches, epoch=f"{epoch}/{epochs}", loss=0.0, rate=0.0
        )

    def advance(self, batch_size: int, loss: float | None = None) -> None:
        """One more batch; ``loss`` (the running loss) when the host has read it, else the bar
        keeps showing the last one."""
        self.seen += batch_size
        if self.progress is not None:
            rate = self.seen / max(time.perf_counter() - self.started, 1e-9)
            shown = {} if loss is None else {"loss": loss}
            self.progress.update(self.task_id, advance=1, rate=rate, **shown)

    def end_epoch(self) -> float:
        """Stop the bar; returns the epoch's training throughput in samples/s."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        return self.seen / max(time.perf_counter() - self.started, 1e-9)
