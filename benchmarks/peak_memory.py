"""Peak resident memory (RSS) of every CIFAR-10 recipe, against a 2 GiB goal.

    .venv/bin/python benchmarks/peak_memory.py [--recipes cifar10-vgg,...] [--steps 20]
        [--write docs/benchmarks.md]

Each recipe runs in a fresh process (``dlzoo train RECIPE --set train.max_steps=N``), so
its peak is its own: the imported libraries (``import torch`` of the CUDA build alone peaks at
696 MiB resident here, 292 MiB of it pages of CUDA libraries that a CPU run never calls; a
torch.optim optimiser's first use imports torch._dynamo, about 180 MiB more), the data set
loaded in memory, the model, the optimiser state, the activations of a training step and of the
validation and test passes that end every run.
The number is the ``peak_rss_mib`` that ``run.json`` records. A full run can peak a few
hundred MiB higher than the short one (why is not pinned down yet), so the
table also shows the recipe's full run from ``--runs-dir`` when there is one, and the goal
is judged on the larger of the two. Memory does not depend on how busy the machine is, so
this benchmark may run beside others.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from throughput import machine  # benchmarks/ is on the path as a script

from dlzoo.config import RunConfig
from dlzoo.recipes import list_recipes, load_recipe
from dlzoo.report.results import differences, replace_between_markers

HERE = Path(__file__).resolve().parent
GOAL_MIB = 2048.0


def cifar10_recipes() -> list[str]:
    return [cfg.recipe for cfg in list_recipes() if cfg.data.name == "cifar10"]


def short_run_peak(recipe: str, args: argparse.Namespace, overrides: tuple[str, ...] = ()) -> float:
    """``peak_rss_mib`` of a ``--steps``-step run of ``recipe`` (with ``overrides``) in its own process."""
    with tempfile.TemporaryDirectory() as runs:
        command = [
            sys.executable, "-m", "dlzoo", "train", recipe, "--data-dir", args.data_dir, "--runs-dir", runs,
            "--set", f"train.max_steps={args.steps}", "--set", f"train.threads={args.threads}",
            *(part for override in overrides for part in ("--set", override)),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: {recipe} failed: {done.stderr.strip().splitlines()[-1]}")
        (info,) = Path(runs).glob(f"{recipe}/*/run.json")
        return float(json.loads(info.read_text())["peak_rss_mib"])


def full_run_peak(recipe: str, runs_dir: Path) -> float | None:
    """The peak of the newest finished run in ``runs_dir`` of ``recipe`` as written (all its
    epochs, no override but those ``dlzoo results`` allows, such as the thread count), if it
    recorded one."""
    written = load_recipe(recipe)
    for info in sorted(runs_dir.glob(f"{recipe}/*/run.json"), reverse=True):
        run = json.loads(info.read_text())
        raw = json.loads((info.parent / "config.json").read_text())
        try:
            as_written = not differences(written, RunConfig.from_dict(raw, raw.pop("recipe")))
        except (ValueError, TypeError, KeyError):  # a config of an older dlzoo: not comparable
            continue
        if as_written and run.get("status") == "finished" and run.get("peak_rss_mib"):
            return float(run["peak_rss_mib"])
    return None


def table(rows: list[tuple[str, str, int, float, float | None]]) -> str:
    lines = [
        "| recipe | model | batch | peak RSS, short run (MiB) | peak RSS, full run (MiB) | under 2 GiB |",
        "|---|---|---|---|---|---|",
    ]
    for recipe, model, batch, short, full in rows:
        worst = max(short, full or 0.0)
        full_text = f"{full:,.0f}" if full else "-"
        under = "yes" if worst < GOAL_MIB else "no"
        lines.append(f"| {recipe} | {model} | {batch} | {short:,.0f} | {full_text} | {under} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", help="comma-separated (default: every CIFAR-10 recipe)")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each short run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--runs-dir", default="runs", help="full runs to show beside (default ./runs)")
    parser.add_argument("--write", metavar="FILE", help="replace the peak-memory section of FILE")
    args = parser.parse_args()
    known = cifar10_recipes()
    names = [name.strip() for name in args.recipes.split(",")] if args.recipes else known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"error: {unknown[0]!r} is not a CIFAR-10 recipe; choose from {', '.join(known)}")
    rows = []
    for name in names:
        cfg = load_recipe(name)
        short = short_run_peak(name, args)
        full = full_run_peak(name, Path(args.runs_dir))
        rows.append((name, cfg.model.name, cfg.data.batch_size, short, full))
        print(f"{name}: {short:,.0f} MiB", file=sys.stderr)
    command = "python benchmarks/peak_memory.py " + " ".join(sys.argv[1:])
    report = (
        f"Machine: {machine()}; the recipes' own precision (bf16 autocast where the CPU has it).\n"
        f"Each recipe for {args.steps} training steps in its own process ({args.threads} thread), then its "
        f"validation and test passes; the full-run column is `peak_rss_mib` of the newest finished run in "
        f"`{args.runs_dir}`.\nCommand: `{command.strip()}`\n\n{table(rows)}\n"
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, "peak-memory")


if __name__ == "__main__":
    main()
