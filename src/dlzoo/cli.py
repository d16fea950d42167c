"""``dlzoo`` command line: a thin table from command names to the typed functions in
``dlzoo.api`` and ``dlzoo.data``. A user mistake prints one ``error:`` line and exits 2."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dlzoo.errors import CheckpointError, TrainingError, TrainingInterrupted

EXIT_USER_ERROR = 2
LISTS = ("recipes", "models", "datasets", "tasks", "optimizers", "schedules")


def cmd_list(args: argparse.Namespace) -> None:
    from dlzoo import registry
    from dlzoo.recipes import list_recipes

    if args.what != "recipes":
        import dlzoo.api  # noqa: F401  (fills every registry)

        table = {
            "models": registry.MODELS,
            "datasets": registry.DATASETS,
            "tasks": registry.TASKS,
            "optimizers": registry.OPTIMIZERS,
            "schedules": registry.SCHEDULES,
        }[args.what]
        print("\n".join(name for name in table.names() if _match(name, args.pattern)))
        return
    recipes = list_recipes(args.pattern)
    if not recipes:
        raise ValueError(f"no recipe matches {args.pattern!r}; run `dlzoo list` to see them all")
    view = Table("recipe", "model", "data", "task", "source reported", "target", "dlzoo result", box=None)
    for cfg in recipes:
        meta = cfg.meta
        result = f"{meta.result:.2%} ({meta.result_minutes:g} min)" if meta.result else "not yet verified"
        view.add_row(
            cfg.recipe,
            cfg.model.name,
            cfg.data.name,
            cfg.task.name,
            meta.source_result or "-",
            f"{meta.target:.1%}" if meta.target else "-",
            result,
        )
    Console(width=200).print(view)


def _match(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatch(name, pattern)


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """``argv`` (a ``dlzoo train`` command line without ``--nproc``) under torchrun, N processes
    on this machine (``--standalone``: a rendezvous on a free local port)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [*launcher, "-m", "dlzoo", *argv]


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N``."""
    kept: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            kept.append(word)
    return kept


def cmd_train(args: argparse.Namespace) -> None:
    from dlzoo.api import train
    from dlzoo.training.distributed import from_environment

    if args.nproc is not None and args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1 (processes on this machine), got {args.nproc}")
    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.nproc is not None and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        if args.resume is None:  # a mistake in the config is one error here, not one per process
            from dlzoo.recipes import load_recipe
            from dlzoo.training.distributed import Distributed, check_batch_size

            check_batch_size(Distributed(0, args.nproc), load_recipe(args.recipe, overrides).data.batch_size)
        command = torchrun_command(args.nproc, without_nproc(args.argv))
        raise SystemExit(subprocess.run(command).returncode)
    result = train(
        args.recipe,
        overrides,
        data_dir=args.data_dir,
        runs_dir=args.runs_dir,
        quiet=args.quiet,
        resume=args.resume,
        force=args.force,
    )
    if from_environment().is_main:  # data-parallel: rank 0 reports for all
        report_result(result)


def report_result(result: Any) -> None:
    """The two lines every training command ends with: the test numbers and the run folder."""
    info = json.loads((result.run_dir / "run.json").read_text())
    checkpoint = info["test_checkpoint"]
    ordered = sorted(result.test.items(), key=lambda item: item[0] != "test_accuracy")  # accuracy first
    measured = ", ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in ordered)
    seconds = info["train_seconds"]
    where = f"{checkpoint['tag']} checkpoint, epoch {checkpoint['epoch']}; {seconds:.0f} s training"
    print(f"test {measured} on {info['data']['test']} test examples ({where})")
    if "frozen_unchanged" in info.get("transfer", {}):
        frozen = info["transfer"]
        print(f"frozen: {len(frozen['frozen'])} parameter tensors, unchanged: {frozen['frozen_unchanged']}")
    print(f"run folder: {result.run_dir}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from dlzoo.api import finetune

    result = finetune(
        args.run,
        args.recipe,
        freeze=args.freeze,
        features_lr_mult=args.lr_mult,
        overrides=args.set,
        data_dir=args.data_dir,
        runs_dir=args.runs_dir,
        quiet=args.quiet,
    )
    report_result(result)


def cmd_eval(args: argparse.Namespace) -> None:
    from dlzoo.api import evaluate

    metrics = evaluate(args.run, split=args.split, checkpoint=args.checkpoint, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    print(
        f"{metrics['split']} accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  "
        f"({metrics['examples']} examples, {metrics['checkpoint']} checkpoint)"
    )
    view = Table("class", "accuracy", box=None)
    for name, accuracy in metrics["per_class_accuracy"].items():
        view.add_row(name, f"{accuracy:.4f}")
    console = Console(width=200)
    console.print(view)
    matrix = Table("true \\ predicted", *metrics["classes"], box=None)
    for name, row in zip(metrics["classes"], metrics["confusion_matrix"]):
        matrix.add_row(name, *map(str, row))
    console.print(matrix)


def cmd_predict(args: argparse.Namespace) -> None:
    from dlzoo.api import predict

    results = predict(
        args.run,
        args.files,
        top_k=args.top_k,
        invert=args.invert,
        threshold=args.threshold,
        checkpoint=args.checkpoint,
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for item in results:
        ranked = "  ".join(f"{t['class']} {t['probability']:.3f}" for t in item["top"])
        print(f"{item['file']}: {ranked}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from dlzoo.sweep import print_results, sweep

    result = sweep(
        args.recipe,
        args.grid,
        overrides=args.set,
        trials=args.trials,
        workers=args.workers,
        storage=args.storage,
        study_name=args.study,
        sweep_dir=args.sweep_dir,
        data_dir=args.data_dir,
        quiet=False,
    )
    print_results(result)
    print(f"results: {result.csv_path}  plot: {result.plot_path}  study: {result.storage}")


def cmd_export(args: argparse.Namespace) -> None:
    from dlzoo.export import export_run

    path = export_run(
        args.run, args.format, output=args.output, checkpoint=args.checkpoint, overwrite=args.overwrite
    )
    print(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from dlzoo.report.html import write_report

    path = write_report(args.runs, args.output, data_dir=args.data_dir, wrong_examples=args.wrong_examples)
    print(f"report: {path}")


def cmd_lr_find(args: argparse.Namespace) -> None:
    from dlzoo.api import lr_find

    result = lr_find(
        args.recipe,
        args.set,
        start=args.start,
        end=args.end,
        steps=args.steps,
        data_dir=args.data_dir,
        runs_dir=args.runs_dir,
    )
    suggestion = result["suggestion"]
    print(f"{result['steps_run']} steps from lr {result['start']:g}; {result['ended']}")
    print(
        f"suggested cyclic range: base_lr {suggestion['base_lr']:.3g} to max_lr {suggestion['max_lr']:.3g} "
        f"({suggestion['rule']}; the smoothed loss was lowest at lr {suggestion['min_loss_lr']:.3g})"
    )
    print(
        f"train with: dlzoo train {result['recipe']} " + " ".join(f"--set {o}" for o in result["overrides"])
    )
    print(f"curve: {result['folder']}/lr_find.png")


def cmd_results(args: argparse.Namespace) -> None:
    from dlzoo.api import results

    recipes = [name.strip() for name in args.recipes.split(",") if name.strip()] if args.recipes else None
    table = results(
        args.runs_dir, recipes, write=args.write, with_overrides=args.with_overrides, record=args.record
    )
    print(table.markdown)
    if table.excluded:
        print(f"left out {len(table.excluded)} run folders:", file=sys.stderr)
        for line in table.excluded:
            print(f"  {line}", file=sys.stderr)
    for path in table.recorded:
        print(f"recorded the measured result in {path}", file=sys.stderr)
    if args.write:
        rows = f"{table.kept} row{'' if table.kept == 1 else 's'}"
        kept = f", keeping {rows} measured elsewhere" if table.kept else ""
        print(f"wrote the table of every recipe into {args.write}{kept}", file=sys.stderr)


def cmd_data_list(args: argparse.Namespace) -> None:
    from dlzoo.data import pipeline
    from dlzoo.data.core import resolve_data_dir
    from dlzoo.registry import DATASETS

    print("\n".join(DATASETS.names()))
    imported = resolve_data_dir(args.data_dir or "") / "imported"
    for path in sorted(imported.glob("*.pt")) if imported.is_dir() else []:
        print(f"{pipeline.IMPORTED_PREFIX}{path.stem}")


def cmd_data_import(args: argparse.Namespace) -> None:
    from dlzoo.data.core import resolve_data_dir
    from dlzoo.data.importer import import_images

    path = import_images(
        Path(args.source),
        args.name,
        resolve_data_dir(args.data_dir or ""),
        labels_file=Path(args.labels) if args.labels else None,
        size=args.size,
        grayscale=args.grayscale,
        test_fraction=args.test_fraction,
        overwrite=args.overwrite,
        skip_bad=args.skip_bad,
    )
    print(f"imported {args.source} as data.name=imported:{args.name} ({path})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlzoo", description="A PyTorch deep-learning zoo and lab.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], None], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = add("list", cmd_list, "list recipes (with target and verified result), or registered names")
    sub.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mnist-*'")
    sub.add_argument("--what", choices=LISTS, default="recipes", help="what to list (default: recipes)")

    sub = add("train", cmd_train, "train a recipe end to end and measure its test split once")
    sub.add_argument("recipe", help="recipe name (dlzoo list) or a path to a recipe .toml file")
    sub.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=0.05 (repeatable)",
    )
    sub.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")
    sub.add_argument("--seed", type=int, help="shorthand for --set train.seed=N")
    sub.add_argument("--data-dir", help="folder with local data / download cache (default $DLZOO_DATA_DIR)")
    sub.add_argument("--runs-dir", help="parent folder of run folders (default ./runs)")
    sub.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    sub.add_argument(
        "--resume",
        metavar="RUN_DIR|auto",
        help="continue a run exactly from its last checkpoint (auto: the newest unfinished one)",
    )
    sub.add_argument(
        "--force", action="store_true", help="with --resume: accept overrides that change its config"
    )
    sub.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="data-parallel on this machine: run under torchrun with N processes (gloo on CPU, NCCL on GPUs)",
    )

    sub = add("finetune", cmd_finetune, "train a recipe starting from a run's weights, some of them frozen")
    sub.add_argument("run", help="run folder whose best weights to start from")
    sub.add_argument("--recipe", required=True, help="the recipe to train (its data, classes, budget)")
    sub.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PATTERN",
        help="parameters to keep fixed: features, or a pattern like features.0.* (repeatable)",
    )
    sub.add_argument("--lr-mult", type=float, default=1.0, help="lr multiplier for trainable feature layers")
    sub.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    sub.add_argument("--data-dir")
    sub.add_argument("--runs-dir")
    sub.add_argument("--quiet", action="store_true")

    sub = add("eval", cmd_eval, "accuracy, per-class accuracy and confusion matrix of a finished run")
    sub.add_argument("run", help="run folder")
    sub.add_argument("--split", choices=("test", "val"), default="test")
    sub.add_argument("--checkpoint", choices=("best", "last"), default="best")
    sub.add_argument("--data-dir", help="where the run's data is, if not where it was trained")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = add("predict", cmd_predict, "classify your own image files with a trained run")
    sub.add_argument("run", help="run folder")
    sub.add_argument(
        "files", nargs="+", help="image files of any size and colour, folders, or globs ('*.jpg')"
    )
    sub.add_argument("--top-k", type=int, default=3)
    sub.add_argument(
        "--invert", action="store_true", help="invert (dark digit on light paper -> MNIST style)"
    )
    sub.add_argument(
        "--threshold",
        type=int,
        metavar="0-255",
        help="after --invert: pixels below this become 0, the rest 255 (the notes' photo clean-up)",
    )
    sub.add_argument("--checkpoint", choices=("best", "last"), default="best")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = add("sweep", cmd_sweep, "hyperparameter sweep with Optuna: a grid, or TPE over ranges")
    sub.add_argument("recipe", help="recipe name (dlzoo list) or a path to a recipe .toml file")
    sub.add_argument(
        "--grid",
        nargs="+",
        required=True,
        metavar="KEY=VALUES",
        help="e.g. model.activation=relu,tanh (choices) or optim.lr=1e-4..1e-1:log (a range)",
    )
    sub.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="fixed overrides for every trial",
    )
    sub.add_argument(
        "--trials", type=int, help="number of TPE trials (ranges need it; default: the whole grid)"
    )
    sub.add_argument(
        "--workers", type=int, default=1, help="worker processes on this machine sharing the study"
    )
    sub.add_argument(
        "--storage",
        help="Optuna database URL (default sqlite:///SWEEP_DIR/study.db; "
        "postgresql://user@host/db lets workers on several machines share one study)",
    )
    sub.add_argument("--study", help="study name (default RECIPE-sweep)")
    sub.add_argument(
        "--sweep-dir",
        help="where the study, trial runs, results.csv and params.png go "
        "(default sweeps/RECIPE/<time>); give it again to resume a killed sweep",
    )
    sub.add_argument("--data-dir")

    sub = add("export", cmd_export, "write a run's model as safetensors, ONNX, TorchScript or a text dump")
    sub.add_argument("run", help="run folder")
    sub.add_argument(
        "--format", required=True, help="safetensors, onnx (checked with onnxruntime), torchscript or txt"
    )
    sub.add_argument("--output", help="file or folder to write (default RUN/export/model.<ext>)")
    sub.add_argument("--checkpoint", choices=("best", "last"), default="best")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing export file")

    sub = add("report", cmd_report, "one self-contained HTML page about a run, or comparing several runs")
    sub.add_argument("runs", nargs="+", metavar="RUN", help="run folder; two or more add a comparison")
    sub.add_argument(
        "--output", "-o", help="HTML file (default RUN/report.html, or ./report-compare.html for several)"
    )
    sub.add_argument("--data-dir", help="where the runs' data is, if not where they were trained")
    sub.add_argument(
        "--wrong-examples", type=int, default=16, metavar="N", help="confidently wrong test images to show"
    )

    sub = add("lr-find", cmd_lr_find, "LR range test: train with a growing lr and suggest a cyclic range")
    sub.add_argument("recipe", help="recipe name (dlzoo list) or a path to a recipe .toml file")
    sub.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    sub.add_argument("--start", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    sub.add_argument("--end", type=float, default=1.0, help="last learning rate (default 1)")
    sub.add_argument("--steps", type=int, default=100, help="training batches, at most (default 100)")
    sub.add_argument("--data-dir")
    sub.add_argument("--runs-dir", help="writes RUNS_DIR/RECIPE/lr-find-<time>/ (default ./runs)")

    sub = add("results", cmd_results, "the results table of every recipe, from the finished runs")
    sub.add_argument("--runs-dir", default="runs", help="where the run folders are (default ./runs)")
    sub.add_argument(
        "--write",
        metavar="FILE",
        help="write the table of every recipe between the results markers of FILE (README.md); rows of "
        "recipes without runs here keep FILE's line where it shows their recorded result",
    )
    sub.add_argument("--recipes", metavar="A,B,...", help="only these recipes (default: all)")
    sub.add_argument(
        "--with-overrides",
        action="store_true",
        help="also show runs with other settings than the recipe, one row per set of overrides",
    )
    sub.add_argument(
        "--record",
        action="store_true",
        help="write each measured recipe's result, command, data, seeds and time into its recipe's [meta]",
    )

    data = add("data", lambda a: parser.parse_args(["data", "--help"]), "list data sets, import your own")
    data_commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    sub = data_commands.add_parser("list", help="registered data sets and your imports")
    sub.set_defaults(handler=cmd_data_list)
    sub.add_argument("--data-dir")
    sub = data_commands.add_parser(
        "import", help="import an image folder, zip or list file once, as a cached tensor file"
    )
    sub.set_defaults(handler=cmd_data_import)
    sub.add_argument("source", help="a folder or .zip of class/ (or train/class/, test/class/) images")
    sub.add_argument("--name", required=True, help="name to train with: data.name=imported:NAME")
    sub.add_argument(
        "--labels", help="text file of 'relative/path label' lines (source is then the image root)"
    )
    sub.add_argument("--size", type=int, help="resize every image to SIZE x SIZE")
    sub.add_argument("--grayscale", action="store_true")
    sub.add_argument(
        "--test-fraction", type=float, default=0.2, help="held out when there is no test/ folder"
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing import of that name")
    sub.add_argument("--skip-bad", action="store_true", help="skip unreadable files instead of stopping")
    sub.add_argument("--data-dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    other_rank = os.environ.get("RANK", "0") != "0"  # a process of a data-parallel run other than rank 0
    try:
        args.handler(args)
    except TrainingInterrupted as error:
        if not other_rank:
            print(str(error), file=sys.stderr)
        return 130
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        if not other_rank:  # data-parallel: every process meets the same mistake; rank 0 says it
            print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
