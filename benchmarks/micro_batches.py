"""Micro-batches against the whole batch: what ``train.micro_batches`` costs or buys in speed and
peak memory.

    .venv/bin/python benchmarks/micro_batches.py [--recipes cifar10-airbench,...] [--split 1,2,4]
        [--threads 2] [--steps 10] [--repeats 2] [--memory-steps 3] [--write docs/benchmarks.md]

``train.micro_batches=N`` runs each training batch as N chunks, forward and backward one after
the other, and steps once (gradient accumulation): the activations alive at a time are one
chunk's. For each recipe and each N of ``--split``, the table gives the images per second of
its training steps (built as ``dlzoo train`` builds it; ``--warmup`` dropped steps, then
``--steps`` timed ones, each setting ``--repeats`` times, alternating; the median) and the peak
RSS of a ``--memory-steps``-step run in its own process (``benchmarks/peak_memory.py``'s
measure, at 1 thread as its table). Accuracy is not measured here: batch norm normalises each
chunk by its own statistics, so a recipe that splits its batches needs its own
``benchmarks/time_to_accuracy.py`` run.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from memory_format import add_timing_arguments, alternating_rates  # benchmarks/ is on the path
from peak_memory import short_run_peak
from throughput import machine

from dlzoo.recipes import load_recipe
from dlzoo.report.results import replace_between_markers


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | model | batch | micro-batches | chunk | img/s | vs whole batch | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        whole = statistics.median(row["rates"][1]) if 1 in row["rates"] else None
        for split, rates in row["rates"].items():
            rate = statistics.median(rates)
            ratio = f"{rate / whole:.2f}x" if whole else "-"
            chunk = -(-row["batch"] // split)  # the largest chunk
            lines.append(
                f"| {row['recipe']} | {row['model']} | {row['batch']} | {split} | {chunk} | {rate:.0f} "
                f"| {ratio} | {row['peaks'][split]:,.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", default="cifar10-airbench", help="comma-separated recipe names")
    parser.add_argument("--split", default="1,2,4", help="comma-separated train.micro_batches values")
    add_timing_arguments(parser)
    parser.add_argument("--repeats", type=int, default=2, help="times each setting is timed, alternating")
    parser.add_argument("--memory-steps", type=int, default=3, help="training steps of each peak-RSS run")
    parser.add_argument("--write", metavar="FILE", help="replace the micro-batches section of FILE")
    args = parser.parse_args()
    splits = [int(value) for value in args.split.split(",")]
    memory_args = argparse.Namespace(steps=args.memory_steps, threads=1, data_dir=args.data_dir)
    rows = []
    for recipe in args.recipes.split(","):
        cfg = load_recipe(recipe)  # a bad name or split fails here, before anything runs
        for split in splits:
            load_recipe(recipe, [f"train.micro_batches={split}"])
        settings = {split: [f"train.micro_batches={split}"] for split in splits}
        rates = alternating_rates(recipe, settings, args)
        peaks = {split: short_run_peak(recipe, memory_args, tuple(settings[split])) for split in splits}
        rows.append(
            {"recipe": recipe, "model": cfg.model.name, "batch": cfg.data.batch_size,
             "rates": rates, "peaks": peaks}
        )  # fmt: skip
        print(table(rows[-1:]), flush=True)
    report = (
        f"Machine: {machine()}; {args.threads} threads, {args.warmup} warm-up + {args.steps} timed training "
        f"steps, each setting {args.repeats} times (alternating; the median), the recipe's own batch, data, "
        f"precision and memory format; peak RSS of a {args.memory_steps}-step run at 1 thread.\n"
        f"Command: `python benchmarks/micro_batches.py --recipes {args.recipes} --split {args.split} "
        f"--threads {args.threads} --steps {args.steps} --repeats {args.repeats} "
        f"--memory-steps {args.memory_steps} --write docs/benchmarks.md`\n\n{table(rows)}"
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, section="micro-batches")


if __name__ == "__main__":
    main()
