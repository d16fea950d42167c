"""The Python API: typed functions the CLI is a thin table over.

>>> import dlzoo
>>> result = dlzoo.train("digits-lenet5", overrides=["train.epochs=2"])
>>> dlzoo.evaluate(result.run_dir)["accuracy"]
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlzoo.config import RunConfig
from dlzoo.data.loader import Normalizer, split_train_val
from dlzoo.data.pipeline import eval_loader, load_data
from dlzoo.data.sources import BAD_IMAGE_ERRORS, decode_image
from dlzoo.models import create_model
from dlzoo.recipes import list_recipes, load_recipe
from dlzoo.registry import TASKS
from dlzoo.report.results import ResultsTable, build_results, record_results, write_results
from dlzoo.tasks.classify import class_probabilities, confusion_matrix
from dlzoo.tasks.multitask import top_sequences
from dlzoo.training.checkpoint import load_weights
from dlzoo.training.loop import ClassPredictions, RunResult, pick_device
from dlzoo.training.loop import evaluate as evaluate_split
from dlzoo.training.loop import train as train_config
from dlzoo.training.lr_find import lr_find as run_range_test
from dlzoo.training.resume import find_resumable, resume_config
from dlzoo.training.run import read_json


def _with_options(
    overrides: list[str] | None, data_dir: str | None, runs_dir: str | None, quiet: bool
) -> list[str]:
    """``overrides`` plus the config keys that the ``data_dir``, ``runs_dir``, ``quiet`` options set."""
    extra = list(overrides or [])
    if data_dir is not None:
        extra.append(f"data.data_dir={data_dir}")
    if runs_dir is not None:
        extra.append(f"log.runs_dir={runs_dir}")
    if quiet:
        extra.append("log.progress=false")
    return extra


def train(
    recipe: str | RunConfig,
    overrides: list[str] | None = None,
    data_dir: str | None = None,
    runs_dir: str | None = None,
    quiet: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    resume: str | Path | None = None,
    force: bool = False,
) -> RunResult:
    """Train a recipe (a name, a TOML path or a ``RunConfig``) and measure its test split once.

    ``resume`` (a run folder, or ``"auto"`` for the newest unfinished run of the recipe)
    continues that run exactly where its last checkpoint left it; overrides that change its
    saved config are refused unless ``force``. ``on_epoch_end(row)`` is called with each
    epoch's metrics; raising ``dlzoo.errors.StopRun`` from it ends the run early (how a sweep
    prunes a trial).
    """
    cfg = recipe if isinstance(recipe, RunConfig) else load_recipe(recipe)
    extra = _with_options(overrides, data_dir, runs_dir, quiet)
    if resume is None:
        return train_config(cfg.with_overrides(extra), quiet=quiet, on_epoch_end=on_epoch_end)
    if str(resume) == "auto":
        run_dir = find_resumable(runs_dir or cfg.log.runs_dir, cfg.recipe)
    else:
        run_dir = Path(resume)
    resumed = resume_config(run_dir, cfg.recipe, extra, force)
    return train_config(resumed, quiet=quiet, on_epoch_end=on_epoch_end, resume_from=run_dir)


def lr_find(
    recipe: str | RunConfig,
    overrides: list[str] | None = None,
    start: float = 1e-6,
    end: float = 1.0,
    steps: int = 100,
    data_dir: str | None = None,
    runs_dir: str | None = None,
) -> dict[str, Any]:
    """The learning-rate range test (Smith 2017): ``steps`` training batches with the lr growing
    exponentially from ``start`` to ``end``. Writes ``lr_find.csv/.png/.json`` into a new
    ``runs/<recipe>/lr-find-<time>/`` and returns the json's content: the suggested
    ``suggestion["base_lr"]``/``["max_lr"]`` and the ``overrides`` that train with them."""
    cfg = recipe if isinstance(recipe, RunConfig) else load_recipe(recipe)
    return run_range_test(
        cfg.with_overrides(_with_options(overrides, data_dir, runs_dir, quiet=True)), start, end, steps
    )


def results(
    runs_dir: str | Path = "runs",
    recipes: list[str] | None = None,
    write: str | Path | None = None,
    with_overrides: bool = False,
    record: bool = False,
) -> ResultsTable:
    """The results table of every recipe (or of ``recipes``) from the finished runs under ``runs_dir``;
    ``record`` first writes each measured recipe's numbers into its recipe file's ``[meta]``;
    ``write`` puts the table of every recipe between the results markers of that markdown file,
    rebuilding the rows of the measured ``recipes`` and keeping the file's line for the others
    where it still shows their recorded result (see ``dlzoo.report.results``)."""
    table = build_results(Path(runs_dir), recipes, with_overrides)
    if record:
        table.recorded = record_results(table)
    if write is not None:
        table.kept = write_results(Path(write), table)
    return table


def finetune(
    run_dir: str | Path,
    recipe: str,
    freeze: list[str] | None = None,
    features_lr_mult: float = 1.0,
    overrides: list[str] | None = None,
    **train_options: Any,
) -> RunResult:
    """Train ``recipe`` starting from the best weights of ``run_dir``, with ``freeze`` patterns
    (e.g. ``["features"]``) kept fixed; a new head is made when the class count differs."""
    if not (Path(run_dir) / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a dlzoo run folder (no run.json)")
    extra = [f"model.init_from={run_dir}", f"model.features_lr_mult={features_lr_mult}"]
    if freeze:
        extra.append(f"model.freeze={','.join(freeze)}")
    return train(recipe, extra + list(overrides or []), **train_options)


@dataclass
class LoadedRun:
    """A finished run rebuilt from its folder alone."""

    run_dir: Path
    cfg: RunConfig
    info: dict[str, Any]
    model: nn.Module
    normalizer: Normalizer

    @property
    def classes(self) -> list[str]:
        return self.info["data"]["classes"]


def load_run(run_dir: str | Path, checkpoint: str = "best") -> LoadedRun:
    """Rebuild the model of ``run_dir`` with the weights of checkpoint ``best`` or ``last``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a dlzoo run folder (no config.json/run.json)")
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be best or last, got {checkpoint!r}")
    raw = read_json(run_dir / "config.json")
    cfg = RunConfig.from_dict(raw, raw.pop("recipe"))
    info = read_json(run_dir / "run.json")
    data = info["data"]
    settings = {**cfg.model.model_kwargs(), "pretrained": False}  # the checkpoint holds the weights
    model = create_model(cfg.model.name, len(data["classes"]), tuple(data["in_shape"]), "default", **settings)
    load_weights(run_dir / "checkpoints", checkpoint, model)
    model.eval()
    return LoadedRun(run_dir, cfg, info, model, Normalizer.from_dict(info["normalizer"]))


def evaluate(
    run_dir: str | Path, split: str = "test", checkpoint: str = "best", data_dir: str | None = None
) -> dict[str, Any]:
    """Accuracy, per-class accuracy and the confusion matrix of a run on its test or val split.

    For a multi-head run ``accuracy`` counts an example right when every head is (a whole
    captcha), the task adds ``char_accuracy`` and per-head accuracies, and the per-class
    accuracy and confusion matrix pool the predictions of all heads."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, got {split!r}")
    run = load_run(run_dir, checkpoint)
    cfg = run.cfg if data_dir is None else run.cfg.with_overrides([f"data.data_dir={data_dir}"])
    bundle = load_data(cfg.data)
    data = (
        split_train_val(bundle.train, cfg.data.val_fraction, cfg.train.seed)[1]
        if split == "val"
        else bundle.test
    )
    device = pick_device("auto")
    run.model.to(device)
    loader = eval_loader(cfg.data, data, run.normalizer, device)
    task = TASKS.get(cfg.task.name)(run.model, cfg, len(run.classes))
    predictions = ClassPredictions()  # filled by the same forward passes as the metrics
    metrics: dict[str, Any] = {
        k.removeprefix(f"{split}_"): v
        for k, v in evaluate_split(task, loader, prefix=split, predictions=predictions).items()
    }
    predicted, target = predictions.tensors()  # (N,) or, multi-head, (N, heads)
    matrix = confusion_matrix(predicted.flatten(), target.flatten(), len(run.classes))  # heads pooled
    per_class = (matrix.diag() / matrix.sum(dim=1).clamp(min=1)).tolist()
    metrics.update(
        split=split,
        checkpoint=checkpoint,
        examples=len(target),
        per_class_accuracy=dict(zip(run.classes, per_class)),
        confusion_matrix=matrix.tolist(),
        classes=run.classes,
    )
    return metrics


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image(
    path: Path, in_shape: tuple[int, ...], invert: bool = False, threshold: int | None = None
) -> torch.Tensor:
    """A user's image of any size and colour as a uint8 (C, H, W) tensor shaped for the model.

    ``invert`` turns a dark digit on light paper into MNIST's light-on-dark; ``threshold``
    then sets pixels below it to 0 and the rest to 255, as the notes did for photos.
    """
    channels, height, width = in_shape
    try:
        image = decode_image(path.read_bytes(), grayscale=channels == 1, size=(height, width))
    except BAD_IMAGE_ERRORS as error:
        kind = type(error).__name__
        raise ValueError(f"{path} is not a readable image ({kind}); give a PNG or JPEG file") from None
    if invert:
        image = 255 - image
    if threshold is not None:
        image = torch.where(image < threshold, 0, 255).to(torch.uint8)
    return image


def expand_image_paths(items: list[str | Path]) -> list[Path]:
    """Files as given, every image in a folder (sorted), and shell globs like ``photos/*.jpg``."""
    paths: list[Path] = []
    for item in map(str, items):
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            paths += found
        elif any(char in item for char in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"no file matches {item}")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"no such image file: {path}")
    return paths


def predict(
    run_dir: str | Path,
    files: list[str | Path],
    top_k: int = 3,
    invert: bool = False,
    threshold: int | None = None,
    checkpoint: str = "best",
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image (files, folders or globs); for a
    multi-head run the top-k label sequences, each read as one string (a captcha's text)."""
    if threshold is not None and not 0 <= threshold <= 255:
        raise ValueError(f"threshold must be a pixel value in 0..255, got {threshold}")
    run = load_run(run_dir, checkpoint)
    in_shape = tuple(run.info["data"]["in_shape"])
    if len(in_shape) != 3:
        raise ValueError(f"run {run.run_dir} was trained on tabular data; predict takes images")
    paths = expand_image_paths(files)
    batch = torch.stack([load_image(p, in_shape, invert, threshold) for p in paths])
    with torch.no_grad():
        outputs = run.model(run.normalizer(batch.float() / 255))
    results = []
    for path, row in zip(paths, outputs.float()):
        if row.dim() == 2:  # multi-head (heads, classes): label sequences, read as text (a captcha's)
            sequences = top_sequences(torch.softmax(row, dim=-1), top_k)
            ranked = [("".join(run.classes[i] for i in labels), p) for labels, p in sequences]
        else:
            values, indices = class_probabilities(row[None])[0].topk(min(top_k, len(run.classes)))
            ranked = [(run.classes[i], v) for v, i in zip(values.tolist(), indices.tolist())]
        top = [{"class": name, "probability": round(p, 4)} for name, p in ranked]
        results.append({"file": str(path), "top": top})
    return results


__all__ = [
    "LoadedRun",
    "evaluate",
    "finetune",
    "list_recipes",
    "load_recipe",
    "load_run",
    "lr_find",
    "predict",
    "results",
    "train",
]
