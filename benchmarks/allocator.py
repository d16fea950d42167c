"""Freed memory kept for reuse against glibc's default, per recipe: what ``train.reuse_memory`` buys.

    .venv/bin/python benchmarks/allocator.py [--recipes cifar10-airbench,...] [--threads 2]
        [--steps 10] [--repeats 2] [--write docs/benchmarks.md]

Each recipe's experiment is built as ``dlzoo train`` builds it and timed for ``--steps`` training
steps after ``--warmup`` dropped ones, with ``train.reuse_memory=false`` (glibc's malloc as it
is: blocks over its mmap threshold, which it raises up to 32 MiB, go back to the kernel when freed
and come back as zeroed pages, one page fault each) and ``=true`` (``dlzoo.training.allocator``:
blocks under 1 GiB stay in the heap through the epoch). The two alternate ``--repeats`` times, in
turn first, so that a machine whose speed drifts does not favour either; the table gives the
median of each and their ratio. Only recipes whose steps free blocks over 32 MiB can gain (large
batches, large layers); peak memory is ``benchmarks/peak_memory.py``'s.
"""

from __future__ import annotations

import argparse
import statistics

from memory_format import (  # benchmarks/ is on the path
    add_timing_arguments,
    alternating_rates,
    report_alternating,
)

from dlzoo.recipes import load_recipe

DEFAULT_RECIPES = (
    "cifar10-airbench",
    "cifar10-alexnet",
    "cifar10-alexnet8",
    "cifar10-vgg16",
    "cifar10-resnet18",
    "cifar10-keras-cnn",
    "mnist-fast",
)


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | model | batch | glibc default img/s | reuse_memory img/s | reuse / default |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        off, on = statistics.median(row["off"]), statistics.median(row["on"])
        lines.append(
            f"| {row['recipe']} | {row['model']} | {row['batch']} | {off:.0f} | {on:.0f} | {on / off:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="comma-separated recipe names")
    add_timing_arguments(parser)
    parser.add_argument("--repeats", type=int, default=2, help="times each setting is timed, alternating")
    parser.add_argument("--write", metavar="FILE", help="replace the allocator section of FILE")
    args = parser.parse_args()
    rows = []
    for recipe in args.recipes.split(","):
        cfg = load_recipe(recipe)
        settings = {"off": ["train.reuse_memory=false"], "on": ["train.reuse_memory=true"]}
        rates = alternating_rates(recipe, settings, args)
        rows.append({"recipe": recipe, "model": cfg.model.name, "batch": cfg.data.batch_size, **rates})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    report_alternating("allocator.py", "allocator", table(rows), args)


if __name__ == "__main__":
    main()
