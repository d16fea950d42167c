"""Time to accuracy: the speed recipes run to the end of their schedule with several seeds;
the table gives the mean and spread of their test accuracy and training time.

    .venv/bin/python benchmarks/time_to_accuracy.py
        [--recipes cifar10-airbench,cifar10-airbench-muon,cifar10-airbench-progressive,mnist-fast]
        [--seeds 0,1,2] [--threads 2] [--write docs/benchmarks.md]

As in the airbench line of work, a recipe is a fixed schedule, and its time to accuracy is
the time that schedule takes together with the accuracy it reaches: each run is a fresh
``dlzoo train RECIPE --seed S`` process; "training" is the ``train_seconds`` its
``run.json`` records (the epochs with their validation passes, not loading the data or the
final test pass), "wall" the whole process. Test accuracy is measured once, at the end,
as in every dlzoo run. The spread is the sample standard deviation over the seeds.
``--runs-dir DIR`` keeps the run folders there (``dlzoo results --runs-dir DIR --record``
can then record them); by default they go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import machine  # benchmarks/ is on the path as a script

from dlzoo.recipes import load_recipe, recipe_names
from dlzoo.report.results import replace_between_markers

HERE = Path(__file__).resolve().parent
SPEED_RECIPES = ("cifar10-airbench", "cifar10-airbench-muon", "cifar10-airbench-progressive", "mnist-fast")


def one_run(recipe: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Test accuracy, training and wall seconds of one seeded run of ``recipe`` in its own process."""
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs_dir or scratch
        command = [
            sys.executable, "-m", "dlzoo", "train", recipe, "--seed", str(seed), "--data-dir", args.data_dir,
            "--runs-dir", runs, "--set", f"train.threads={args.threads}", *args.extra,
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"error: {recipe} seed {seed} failed: {done.stderr.strip().splitlines()[-1]}")
        info = max(Path(runs).glob(f"{recipe}/*/run.json"), key=lambda path: path.stat().st_mtime)
        run = json.loads(info.read_text())
    accuracy = run["test"]["test_accuracy"]
    return {"accuracy": accuracy, "train_seconds": run["train_seconds"], "wall_seconds": wall}


def mean_spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean = statistics.mean(values) * scale
    spread = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| recipe | seeds | test accuracy (%) | training (s) | wall (s) | target | seeds at target |",
        "|---|---|---|---|---|---|---|",
    ]
    for recipe, runs in results.items():
        target = load_recipe(recipe).meta.target
        accuracies = [run["accuracy"] for run in runs]
        reached = sum(accuracy >= target for accuracy in accuracies) if target else None
        lines.append(
            f"| {recipe} | {len(runs)} | {mean_spread(accuracies, 100)} | "
            f"{mean_spread([run['train_seconds'] for run in runs], digits=1)} | "
            f"{mean_spread([run['wall_seconds'] for run in runs], digits=1)} | "
            f"{f'{target:.2%}' if target else '-'} | {'-' if reached is None else f'{reached}/{len(runs)}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(SPEED_RECIPES))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (at least 2 for a spread)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run (e.g. train.epochs=2 for a smoke run)")  # fmt: skip
    parser.add_argument("--runs-dir", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--write", metavar="FILE", help="replace the time-to-accuracy section of FILE")
    args = parser.parse_args()
    args.extra = [item for override in args.extra for item in ("--set", override)]
    names = [name.strip() for name in args.recipes.split(",") if name.strip()]
    unknown = [name for name in names if name not in recipe_names()]
    if unknown:
        raise SystemExit(f"error: unknown recipe {unknown[0]!r}; choose from {', '.join(recipe_names())}")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"error: --seeds takes comma-separated integers, got {args.seeds!r}") from None
    results: dict[str, list[dict[str, float]]] = {}
    for name in names:
        results[name] = []
        for seed in seeds:
            results[name].append(one_run(name, seed, args))
            run = results[name][-1]
            print(f"{name} seed {seed}: {run['accuracy']:.2%}, {run['train_seconds']:.1f} s", file=sys.stderr)
    command = "python benchmarks/time_to_accuracy.py " + " ".join(sys.argv[1:])
    report = (
        f"Machine: {machine()}; {args.threads} threads, seeds {args.seeds}.\n"
        f"Command: `{command.strip()}`\n\n{table(results)}\n"
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, "time-to-accuracy")


if __name__ == "__main__":
    main()
