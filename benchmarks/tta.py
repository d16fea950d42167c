"""Test accuracy of one finished airbench run at each test-time augmentation level.

    .venv/bin/python benchmarks/tta.py RUN [--levels 0,1,2] [--data-dir ../shared/data]

The checkpoint the run tested (``train.test_checkpoint``) is evaluated on its test split
once per level of ``model.tta`` (0 none, 1 mirror, 2 mirror and 1-pixel shifts;
models/airbench.py), so the levels compare on the same weights: what TTA adds, without
training again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dlzoo.api import load_run
from dlzoo.data.pipeline import eval_loader, load_data
from dlzoo.models.airbench import TTA_LEVELS
from dlzoo.registry import TASKS
from dlzoo.training.loop import evaluate

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished run folder of an airbench recipe")
    parser.add_argument("--levels", default="0,1,2", help="comma-separated model.tta levels")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",") if level.strip()]
    if not levels or any(level not in TTA_LEVELS for level in levels):
        raise SystemExit(f"error: --levels takes levels from {TTA_LEVELS}, got {args.levels!r}")
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    checkpoint = run.cfg.train.test_checkpoint
    if checkpoint != "best":  # the weights the run's own test number came from
        run = load_run(args.run, checkpoint)
    if not hasattr(run.model, "tta"):
        model = run.cfg.model.name
        raise SystemExit(f"error: {args.run} trained {model!r} (no tta levels): give an airbench run")
    cfg = run.cfg.with_overrides([f"data.data_dir={args.data_dir}"])
    loader = eval_loader(cfg.data, load_data(cfg.data).test, run.normalizer)
    task = TASKS.get(cfg.task.name)(run.model, cfg, len(run.classes))
    print(f"{args.run}: test split, {checkpoint} checkpoint")
    print("| model.tta | test accuracy | test loss |\n|---|---|---|")
    for level in levels:
        run.model.tta = level
        metrics = evaluate(task, loader, prefix="test")
        print(f"| {level} | {metrics['test_accuracy']:.2%} | {metrics['test_loss']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
