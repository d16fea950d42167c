"""Channels-last against NCHW, per recipe: which memory format trains each conv recipe faster here.

    .venv/bin/python benchmarks/memory_format.py [--recipes cifar10-vgg,...] [--threads 2]
        [--steps 10] [--write docs/benchmarks.md]

For each recipe with a convolution, the experiment is built twice as ``dlzoo train`` builds it
(its data, batch size, augmentation, model, optimiser and bf16 setting), once with
``train.channels_last=off`` and once with ``on``, and ``--steps`` training steps are timed after
``--warmup`` dropped ones. The table gives images per second in each format, their ratio, the
format the recipe asks for and whether that is the faster one. Which format wins depends on the
layers (depthwise and small-channel convolutions often lose in channels-last on a CPU, wide 3x3
convolutions win), the CPU and the thread count, so the recipes' settings come from this table
on the machine that made their results, and a user of another machine reruns it there.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch
from throughput import machine  # benchmarks/ is on the path as a script
from torch import nn

from dlzoo.recipes import list_recipes, load_recipe
from dlzoo.report.results import replace_between_markers
from dlzoo.training.allocator import freed_memory_kept
from dlzoo.training.loop import build_experiment, prepare_batch


class Rate(NamedTuple):
    images_per_second: float
    first_step_seconds: float
    """With ``train.compile``, mostly the compile."""
    epoch_images: int


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``training_rate`` reads: --threads, --warmup, --steps, --data-dir."""
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def training_rate(recipe: str, overrides: list[str], args: argparse.Namespace) -> Rate | None:
    """How fast ``recipe`` with ``overrides`` trains, built as ``dlzoo train`` builds it
    (``train.compile`` too); None if its model has no convolution."""
    overrides = [*overrides, f"train.threads={args.threads}", f"data.data_dir={args.data_dir}"]
    exp = build_experiment(load_recipe(recipe, overrides))
    if not any(isinstance(m, nn.Conv2d) for m in exp.model.modules()):
        return None
    if exp.cfg.train.compile:
        exp.task.step_model = torch.compile(exp.task.step_model)
    exp.model.train()
    batches = iter(exp.loaders.train)
    seen, start, first_step = 0, time.perf_counter(), 0.0
    with freed_memory_kept(exp.cfg.train.reuse_memory):  # as the loop trains
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                seen, start = 0, time.perf_counter()
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(exp.loaders.train)
                x, y = next(batches)
            metrics = exp.task.train_step(prepare_batch(x, exp.channels_last), y)
            float(metrics["loss"])  # wait for the step to finish (a no-op on the CPU)
            seen += len(x)
            if step == 0:
                first_step = time.perf_counter() - start
        seconds = time.perf_counter() - start
    return Rate(seen / seconds, first_step, exp.loaders.train.num_examples)


def alternating_rates(
    recipe: str, settings: dict[str, list[str]], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Images per second of ``recipe`` under each named set of overrides, each timed
    ``args.repeats`` times, the order reversed on every other repeat so that a machine whose speed
    drifts favours no setting."""
    rates: dict[str, list[float]] = {name: [] for name in settings}
    for repeat in range(args.repeats):
        for name in list(settings) if repeat % 2 == 0 else list(settings)[::-1]:
            rate = training_rate(recipe, settings[name], args)
            if rate is None:
                raise SystemExit(f"error: {recipe} has no convolution; choose conv recipes")
            rates[name].append(rate.images_per_second)
    return rates


def report_alternating(script: str, section: str, table_text: str, args: argparse.Namespace) -> None:
    """Print the report of a script that times settings with ``alternating_rates`` over
    ``--recipes`` (its table, the machine and the command that reproduces it) and, with
    ``--write``, put it in ``section`` of that file."""
    report = (
        f"Machine: {machine()}; {args.threads} threads, {args.warmup} warm-up + {args.steps} timed training "
        f"steps, each setting {args.repeats} times (alternating; the median), the recipe's own batch, data, "
        f"precision and memory format.\n"
        f"Command: `python benchmarks/{script} --recipes {args.recipes} --threads {args.threads} "
        f"--steps {args.steps} --repeats {args.repeats} --write docs/benchmarks.md`\n\n{table_text}"
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, section=section)


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | model | batch | NCHW img/s | channels-last img/s | channels-last / NCHW | recipe asks "
        "| faster |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        faster = "channels-last" if row["last"] > row["nchw"] else "NCHW"
        asks = row["asks"]
        agrees = {"on": faster == "channels-last", "off": faster == "NCHW", "auto": faster == "NCHW"}[asks]
        lines.append(
            f"| {row['recipe']} | {row['model']} | {row['batch']} | {row['nchw']:.0f} | {row['last']:.0f} | "
            f"{row['last'] / row['nchw']:.2f}x | {asks} | {faster}{'' if agrees else ' (recipe differs)'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", help="comma-separated recipe names (default: every conv recipe)")
    add_timing_arguments(parser)
    parser.add_argument("--write", metavar="FILE", help="replace the memory-format section of FILE")
    args = parser.parse_args()
    recipes = args.recipes.split(",") if args.recipes else [cfg.recipe for cfg in list_recipes()]
    rows = []
    for recipe in recipes:
        nchw = training_rate(recipe, ["train.channels_last=off"], args)
        if nchw is None:
            continue
        last = training_rate(recipe, ["train.channels_last=on"], args)
        cfg = load_recipe(recipe)
        rows.append(
            {"recipe": recipe, "model": cfg.model.name, "batch": cfg.data.batch_size,
             "nchw": nchw.images_per_second, "last": last.images_per_second, "asks": cfg.train.channels_last}
        )  # fmt: skip
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    command = "python benchmarks/memory_format.py " + " ".join(
        part for part in (f"--recipes {args.recipes}" if args.recipes else "", f"--threads {args.threads}",
                          f"--steps {args.steps}") if part
    )  # fmt: skip
    report = (
        f"Machine: {machine()}; {args.threads} threads, "
        f"{args.warmup} warm-up + {args.steps} timed training steps per format, the recipe's own batch, "
        f"data and augmentation.\nCommand: `{command} --write docs/benchmarks.md`\n\n{table(rows)}"
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, section="memory-format")


if __name__ == "__main__":
    main()
