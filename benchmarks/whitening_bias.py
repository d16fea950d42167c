"""airbench's training step with the whitening bias learning and frozen: what
``model.whiten_bias_epochs`` buys once its epochs are done.

    .venv/bin/python benchmarks/whitening_bias.py [--recipes cifar10-airbench-muon,...] [--threads 2]
        [--steps 10] [--repeats 2] [--write docs/benchmarks.md]

While the whitening bias learns, the gradient flows back through the first GELU into the
whitening output, so the first conv computes its input gradient too; frozen, it stops at the
first conv's weights. Each recipe's experiment is built as ``dlzoo train`` builds it and timed
(``--warmup`` dropped steps, then ``--steps`` timed ones) with the bias learning and with it
frozen (``model.freeze=features.0.bias``, the state ``start_epoch`` leaves it in after
``model.whiten_bias_epochs``), alternating ``--repeats`` times, in turn first; the table gives the
median of each and their ratio. The time-to-accuracy runs give what it does to a whole run.
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

DEFAULT_RECIPES = ("cifar10-airbench-muon",)
SETTINGS = {"learning": ["model.whiten_bias_epochs=0"], "frozen": ["model.freeze=features.0.bias"]}


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | batch (chunks) | bias learning img/s | bias frozen img/s | frozen / learning |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        learning, frozen = statistics.median(row["learning"]), statistics.median(row["frozen"])
        lines.append(
            f"| {row['recipe']} | {row['batch']} ({row['chunks']}) | {learning:.0f} | {frozen:.0f} "
            f"| {frozen / learning:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipes", default=",".join(DEFAULT_RECIPES), help="airbench recipes, commas between"
    )
    add_timing_arguments(parser)
    parser.add_argument("--repeats", type=int, default=2, help="times each setting is timed, alternating")
    parser.add_argument("--write", metavar="FILE", help="replace the whitening-bias section of FILE")
    args = parser.parse_args()
    rows = []
    for recipe in args.recipes.split(","):
        cfg = load_recipe(recipe)
        if cfg.model.name != "airbench":
            raise SystemExit(
                f"error: {recipe} trains {cfg.model.name}, not airbench; choose an airbench recipe"
            )
        rates = alternating_rates(recipe, SETTINGS, args)
        batch, chunks = cfg.data.batch_size, cfg.train.micro_batches
        rows.append({"recipe": recipe, "batch": batch, "chunks": chunks, **rates})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    report_alternating("whitening_bias.py", "whitening-bias", table(rows), args)


if __name__ == "__main__":
    main()
