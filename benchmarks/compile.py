"""torch.compile against eager, per recipe: where ``train.compile=true`` pays on this machine.

    .venv/bin/python benchmarks/compile.py [--recipes cifar10-airbench,mnist-fast] [--threads 2]
        [--steps 10] [--write docs/benchmarks.md]

Each recipe's experiment is built twice as ``dlzoo train`` builds it (its data, batch,
augmentation, model, optimiser, precision and memory format), once eager and once with its
training step's model through ``torch.compile`` (inductor) as ``train.compile=true`` does. The
table gives the first step's seconds (for the compiled model, mostly the compile), the images
per second of ``--steps`` steps after ``--warmup`` dropped ones, their ratio, and how many
epochs (of the recipe's training split) the compile pause takes to pay back. Inductor on a CPU
generates C++ for the element-wise work between convolutions and leaves the convolutions and
matrix multiplies to oneDNN, so it pays where that element-wise work is a large share of a step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memory_format import add_timing_arguments, training_rate  # benchmarks/ is on the path
from throughput import machine

from dlzoo.recipes import load_recipe
from dlzoo.report.results import replace_between_markers

DEFAULT_RECIPES = (
    "cifar10-airbench",
    "mnist-fast",
    "cifar10-keras-cnn",
    "cifar10-inception10",
    "cifar10-lenet5",
)


def payback_epochs(row: dict) -> str:
    """Epochs until the compiled run catches up with the eager one ("never" if it is not faster)."""
    eager, compiled = row["eager"], row["compiled"]
    if compiled.images_per_second <= eager.images_per_second:
        return "never"
    pause = compiled.first_step_seconds - eager.first_step_seconds
    saved = eager.epoch_images / eager.images_per_second - eager.epoch_images / compiled.images_per_second
    return f"{pause / saved:.1f}"


def table(rows: list[dict]) -> str:
    lines = [  # eager/compiled: memory_format.Rate
        "| recipe | model | batch | eager img/s | compiled img/s | compiled / eager | first step eager (s) "
        "| first step compiled (s) | epochs to pay back |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        eager, compiled = row["eager"], row["compiled"]
        ratio = compiled.images_per_second / eager.images_per_second
        lines.append(
            f"| {row['recipe']} | {row['model']} | {row['batch']} | {eager.images_per_second:.0f} | "
            f"{compiled.images_per_second:.0f} | {ratio:.2f}x | "
            f"{eager.first_step_seconds:.1f} | {compiled.first_step_seconds:.1f} | {payback_epochs(row)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="comma-separated recipe names")
    add_timing_arguments(parser)
    parser.add_argument("--write", metavar="FILE", help="replace the compile section of FILE")
    args = parser.parse_args()
    rows = []
    for recipe in args.recipes.split(","):
        eager = training_rate(recipe, ["train.compile=false"], args)
        if eager is None:
            continue
        compiled = training_rate(recipe, ["train.compile=true"], args)
        cfg = load_recipe(recipe)
        rows.append(
            {"recipe": recipe, "model": cfg.model.name, "batch": cfg.data.batch_size, "eager": eager,
             "compiled": compiled}
        )  # fmt: skip
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    report = (
        f"Machine: {machine()}; {args.threads} threads, {args.warmup} warm-up + {args.steps} timed training "
        f"steps each way, the recipe's own batch, data, precision and memory format.\n"
        f"Command: `python benchmarks/compile.py --recipes {args.recipes} --threads {args.threads} "
        f"--steps {args.steps} --write docs/benchmarks.md`\n\n{table(rows)}"
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, section="compile")


if __name__ == "__main__":
    main()
