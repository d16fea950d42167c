"""``dlzoo report``: one self-contained HTML page about a run, or comparing several.

Everything on the page comes from the run folders (``config.json``, ``run.json``,
``metrics.jsonl``, ``confusion.json``). Figures are drawn anew with matplotlib and embedded
as base64 PNG data URIs, and the page forbids itself any network request (a
Content-Security-Policy), so the one HTML file is the whole report.

The most confidently wrong test images come from rebuilding the model from the checkpoint the
test metrics were measured with and running it over the test split. The report never starts a
download: when the data is not found locally (``--data-dir`` overrides where the run looked),
that section says so and the rest of the page is unaffected.

Default output: ``<run>/report.html`` for one run; ``./report-compare.html`` (in the current
directory) for several. An existing folder as ``output`` receives that default file name.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dlzoo.api import LoadedRun, load_run
from dlzoo.config import RunConfig
from dlzoo.data.core import Split
from dlzoo.data.loader import resize_batch
from dlzoo.data.pipeline import eval_loader, load_data
from dlzoo.report import plots
from dlzoo.tasks.classify import class_probabilities
from dlzoo.training.loop import pick_device

SINGLE_NAME, COMPARE_NAME = "report.html", "report-compare.html"
EXAMPLE_PIXELS = 96
"""Wrong examples are upscaled (nearest neighbour, whole factors) to about this many pixels across."""


# --------------------------------------------------------------------------- reading run folders


@dataclass
class RunFolder:
    """What one run folder holds, read once."""

    path: Path
    config: dict[str, Any]
    info: dict[str, Any]
    rows: list[dict[str, Any]]
    """metrics.jsonl, one row per epoch (empty before the first epoch ends)."""
    confusion: dict[str, Any] | None
    """confusion.json: {"classes", "matrix"} with rows = true class; None when absent."""

    @property
    def recipe(self) -> str:
        return str(self.info.get("recipe") or self.config.get("recipe") or "?")

    @property
    def label(self) -> str:
        """Short name telling runs apart: ``<recipe>/<timestamp>``."""
        return f"{self.recipe}/{self.path.name}"

    @property
    def status(self) -> str:
        return str(self.info.get("status", "unknown"))

    @property
    def test_tag(self) -> str:
        """The checkpoint the test metrics were measured with (``best`` or ``last``)."""
        tested = self.info.get("test_checkpoint") or {}
        return str(tested.get("tag") or self.config.get("train", {}).get("test_checkpoint") or "best")


def _not_a_run_message(path: Path, missing: list[str]) -> str:
    if not path.exists():
        return f"no such run folder: {path}"
    if not path.is_dir():
        return f"{path} is a file, not a run folder; give a folder such as runs/<recipe>/<timestamp>"
    inside = sorted(p for p in path.iterdir() if (p / "run.json").is_file())
    if inside:
        return f"{path} holds runs, it is not one: give a run folder such as {inside[-1]}"
    return f"{path} is not a dlzoo run folder (no {' or '.join(missing)}); give runs/<recipe>/<timestamp>"


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a half-written last line (a run still writing) is left out."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path} line {number} is not JSON; the metrics file is damaged") from None
    return rows


def read_run(run_dir: str | Path) -> RunFolder:
    """Read a run folder; a folder without ``config.json`` and ``run.json`` raises FileNotFoundError."""
    path = Path(run_dir)
    missing = [name for name in ("config.json", "run.json") if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(_not_a_run_message(path, missing))
    confusion_path = path / "confusion.json"
    return RunFolder(
        path=path,
        config=json.loads((path / "config.json").read_text()),
        info=json.loads((path / "run.json").read_text()),
        rows=_read_rows(path / "metrics.jsonl"),
        confusion=json.loads(confusion_path.read_text()) if confusion_path.is_file() else None,
    )


# --------------------------------------------------------------------------- confidently wrong examples


@dataclass
class Mistake:
    index: int
    """Position in the test split."""
    image: torch.Tensor
    """uint8 (C, H, W)."""
    true: str
    predicted: str
    probability: float
    """The probability the model gave its (wrong) prediction."""


def load_test_split(cfg: RunConfig, data_dir: str | None = None) -> Split:
    """The run's test split from local files only (``data.download`` is switched off)."""
    overrides = ["data.download=false"]
    if data_dir is not None:
        overrides.append(f"data.data_dir={data_dir}")
    return load_data(cfg.with_overrides(overrides).data).test


def confident_mistakes(run: LoadedRun, test: Split, count: int) -> tuple[list[Mistake], int]:
    """The ``count`` wrong predictions with the highest predicted probability, and how many were wrong."""
    device = pick_device("auto")
    model = run.model.to(device)
    loader = eval_loader(run.cfg.data, test, run.normalizer, device)
    with torch.inference_mode():
        probabilities = torch.cat([class_probabilities(model(x)).cpu() for x, _ in loader])  # (N, classes)
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != test.y.cpu()).nonzero()[:, 0]
    ranked = wrong[confidence[wrong].argsort(descending=True, stable=True)][:count]
    mistakes = [
        Mistake(
            index=i,
            image=resize_batch(test.x[i : i + 1], run.cfg.data.resize)[0].cpu(),  # as the model saw it
            true=run.classes[int(test.y[i])],
            predicted=run.classes[int(predicted[i])],
            probability=float(confidence[i]),
        )
        for i in ranked.tolist()
    ]
    return mistakes, len(wrong)


def image_png(image: torch.Tensor, pixels: int = EXAMPLE_PIXELS) -> bytes:
    """A (C, H, W) image (uint8, or float in [0, 1]) as a PNG upscaled by a whole factor."""
    if image.dtype != torch.uint8:
        image = image.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    channels, height, width = image.shape
    array = image.permute(1, 2, 0).contiguous().numpy()  # (H, W, C)
    picture = Image.fromarray(array if channels == 3 else array[:, :, 0])  # RGB, else the first channel
    scale = max(1, round(pixels / max(height, width)))
    picture = picture.resize((width * scale, height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- HTML pieces


def _e(value: Any) -> str:
    return html.escape(str(value))


def _img(png: bytes, alt: str, css_class: str = "figure") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{css_class}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str, warn: bool = False) -> str:
    return f'<p class="{"warn" if warn else "note"}">{_e(text)}</p>'


def _table(header: list[str], rows: list[list[str]], escaped: bool = False) -> str:
    """A table; cells are escaped here unless ``escaped`` says they are HTML already."""

    def cell(value: str) -> str:
        return value if escaped else _e(value)

    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(pairs: list[tuple[str, Any]]) -> str:
    """A two-column key/value table, leaving out empty values."""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs if v not in (None, ""))
    return f'<table class="facts">{rows}</table>'


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else str(value)


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"augment": {"flip": false}} -> {"augment.flip": false}."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _setting(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | bool) or value is None else str(value)


# --------------------------------------------------------------------------- one run's sections


def _summary(run: RunFolder) -> str:
    info, cfg = run.info, run.config
    data, meta = info.get("data", {}), cfg.get("meta", {})
    seconds = info.get("train_seconds")
    epochs = cfg.get("train", {}).get("epochs")
    sizes = "/".join(str(data.get(split, "?")) for split in ("train", "val", "test"))
    machine = info.get("machine", {})
    parameters = info.get("parameters")
    model = cfg.get("model", {}).get("name", "?")
    if isinstance(parameters, int):
        model += f" ({parameters:,} parameters)"
    pairs = [
        ("what", meta.get("description")),
        ("started", info.get("started")),
        ("finished", info.get("finished")),
        ("training time", f"{seconds:.1f} s" if isinstance(seconds, int | float) else None),
        ("epochs run", f"{info.get('epochs_run', len(run.rows))} of {epochs}"),
        ("seed", info.get("seed")),
        ("model", model),
        ("data", data.get("source")),
        ("examples train/val/test", sizes),
        ("classes", len(data["classes"]) if "classes" in data else None),
        ("input shape", " × ".join(map(str, data["in_shape"])) if "in_shape" in data else None),
        ("device", machine.get("device")),
        ("reproduces", meta.get("source")),
        ("source reported", meta.get("source_result")),
        ("dlzoo", f"{info.get('dlzoo_version', '?')} (git {info.get('git_revision', '?')})"),
        ("folder", run.path.resolve()),
    ]
    return _facts(pairs)


def _status_note(run: RunFolder) -> str:
    if run.status == "finished":
        return ""
    text = f"This run is {run.status}, not finished: the page shows what it has written so far."
    if run.info.get("error"):
        text += f" Error: {run.info['error']}"
    return _note(text, warn=True)


def _test_section(run: RunFolder) -> str:
    test = run.info.get("test")
    if not test:
        return "<h3>Test metrics</h3>" + _note(
            "No test measurement yet: the run measures its test split once, at the end."
        )
    tested = run.info.get("test_checkpoint") or {}
    where = f"the {tested.get('tag', '?')} checkpoint (epoch {tested.get('epoch', '?')})"
    examples = run.info.get("data", {}).get("test", "?")
    rows = [[name.removeprefix("test_"), _number(value)] for name, value in test.items()]
    target = run.config.get("meta", {}).get("target")
    verdict = ""
    if target and isinstance(test.get("test_accuracy"), float):
        reached = "reached" if test["test_accuracy"] >= target else "not reached"
        verdict = _note(
            f"The recipe's target at its default budget is {target:.4f} test accuracy: {reached}."
        )
    return (
        "<h3>Test metrics</h3>"
        + f'<p class="caption">Measured once on {_e(examples)} test examples with {_e(where)}.</p>'
        + _table(["metric", "value"], rows)
        + verdict
    )


def _curves_section(run: RunFolder) -> str:
    if not run.rows:
        return "<h3>Training curves</h3>" + _note(
            "No epoch has been logged yet (metrics.jsonl is missing or empty)."
        )
    seed = run.info.get("seed", "?")
    curves = plots.figure_png(plots.curves_figure(run.rows, f"{run.recipe} (seed {seed})"))
    lr = plots.figure_png(plots.lr_figure(run.rows, "Learning rate"))
    return (
        "<h3>Training curves</h3>"
        + _img(curves, f"loss and accuracy per epoch of {run.label}")
        + _img(lr, f"learning rate per epoch of {run.label}", "figure small")
    )


def _confusion_section(run: RunFolder) -> str:
    head = "<h3>Confusion matrix (test)</h3>"
    if run.confusion is None:
        return head + _note(
            "No confusion.json: not a classification run, or the test split was not measured yet."
        )
    figure = plots.confusion_figure(run.confusion["classes"], run.confusion["matrix"], "rows: true class")
    return head + _img(plots.figure_png(figure), f"test confusion matrix of {run.label}", "figure square")


def _mistakes_section(run: RunFolder, data_dir: str | None, count: int) -> str:
    head = "<h3>Most confidently wrong test images</h3>"
    in_shape = run.info.get("data", {}).get("in_shape", [])
    if count == 0:
        return head + _note("Not requested (wrong_examples = 0).")
    if run.config.get("task", {}).get("name") != "classify":
        return head + _note("Not a classification run: there are no wrong classes to show.")
    if len(in_shape) != 3:
        return head + _note(f"Tabular data ({' × '.join(map(str, in_shape))} features): no images to show.")
    try:
        loaded = load_run(run.path, run.test_tag)
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # RuntimeError: weights of another shape
        return head + _note(
            f"The model could not be rebuilt from its {run.test_tag} checkpoint: {error}", warn=True
        )
    try:
        test = load_test_split(loaded.cfg, data_dir)
    except (FileNotFoundError, ValueError, OSError) as error:
        hint = "" if data_dir else " Pass the folder that holds it as data_dir (dlzoo report --data-dir)."
        return head + _note(
            f"The test data could not be loaded, so no examples are shown: {error}.{hint}", warn=True
        )
    mistakes, wrong = confident_mistakes(loaded, test, count)
    caption = (
        f"{wrong} of {len(test)} test images are misclassified by the {run.test_tag} checkpoint; "
        f"the {len(mistakes)} shown had the highest predicted probability."
    )
    expected = run.info.get("data", {}).get("test")
    changed = (
        _note(
            f"The test split now has {len(test)} examples, the run measured {expected}: the data changed.",
            warn=True,
        )
        if expected not in (None, len(test))
        else ""
    )
    cards = "".join(
        '<figure class="example">'
        + _img(image_png(m.image), f"test image {m.index}", "example")
        + f"<figcaption>{_e(f'true: {m.true} / predicted: {m.predicted} (p={m.probability:.2f})')}"
        "</figcaption></figure>"
        for m in mistakes
    )
    return head + f'<p class="caption">{_e(caption)}</p>' + changed + f'<div class="examples">{cards}</div>'


def _config_section(run: RunFolder) -> str:
    cards = []
    for section, table in run.config.items():
        if not isinstance(table, dict):
            continue
        rows = [[key, _setting(value)] for key, value in _flatten(table).items()]
        cards.append(f'<div class="card"><h4>[{_e(section)}]</h4>{_table(["key", "value"], rows)}</div>')
    return "<h3>Configuration (config.json)</h3>" + f'<div class="cards">{"".join(cards)}</div>'


def _run_section(run: RunFolder, anchor: str, data_dir: str | None, wrong_examples: int) -> str:
    status = f'<span class="status {_e(run.status)}">{_e(run.status)}</span>'
    return (
        f'<section id="{anchor}"><h2>{_e(run.label)} {status}</h2>'
        + _status_note(run)
        + _summary(run)
        + _test_section(run)
        + _curves_section(run)
        + _confusion_section(run)
        + _mistakes_section(run, data_dir, wrong_examples)
        + _config_section(run)
        + "</section>"
    )


# --------------------------------------------------------------------------- comparison


def _comparison_section(runs: list[RunFolder]) -> str:
    figure = plots.compare_figure([(run.label, run.rows) for run in runs])
    metric_names = list(dict.fromkeys(name for run in runs for name in (run.info.get("test") or {})))
    header = ["run", "status", "epochs", *(name.removeprefix("test_") for name in metric_names), "train s"]
    rows = []
    for i, run in enumerate(runs):
        test = run.info.get("test") or {}
        link = f'<a href="#run-{i}">{_e(run.label)}</a>'
        epochs = _e(run.info.get("epochs_run", len(run.rows)))
        values = [_e(_number(test.get(name))) for name in metric_names]
        seconds = run.info.get("train_seconds")
        rows.append([link, _e(run.status), epochs, *values, _e(f"{seconds:.1f}" if seconds else "–")])
    settings = [{k: _setting(v) for k, v in _flatten(run.config).items()} for run in runs]
    keys = list(dict.fromkeys(key for flat in settings for key in flat if not key.startswith("meta.")))
    table = [[key, *(flat.get(key, "–") for flat in settings)] for key in keys]
    differ = [row for row in table if len(set(row[1:])) > 1]
    differences = (
        _table(["setting", *(run.label for run in runs)], differ)
        if differ
        else _note("The runs share every setting.")
    )
    return (
        '<section id="comparison"><h2>Comparison</h2>'
        + _img(plots.figure_png(figure), "validation loss and accuracy of every run")
        + "<h3>Final test metrics</h3>"
        + _table(header, rows, escaped=True)
        + "<h3>Settings that differ</h3>"
        + differences
        + "</section>"
    )


# --------------------------------------------------------------------------- the page

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430;
       margin: 0 auto; padding: 1.2rem 2rem 3rem; max-width: 1180px; background: #fff; }
h1 { margin-bottom: .2rem; }
h2 { border-bottom: 2px solid #dde3ea; padding-bottom: .3rem; margin-top: 2.4rem; }
h3 { margin: 1.6rem 0 .5rem; } h4 { margin: 0 0 .3rem; font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: .4rem 0; font-size: 14px; }
th, td { border: 1px solid #dde3ea; padding: .22rem .6rem; text-align: left; vertical-align: top; }
thead th { background: #f3f6f9; }
table.facts th { background: #f7f9fb; font-weight: 600; white-space: nowrap; }
td { font-variant-numeric: tabular-nums; }
img.figure { display: block; max-width: 100%; margin: .5rem 0; }
img.small { max-width: 560px; } img.square { max-width: 620px; }
.caption, .note { color: #4a5563; } .note { font-style: italic; }
.warn { background: #fff4e0; border-left: 4px solid #e59400; padding: .5rem .8rem; }
.status { font-size: 13px; padding: .1rem .5rem; border-radius: 1rem;
          background: #e3e8ee; vertical-align: middle; }
.status.finished { background: #dff3e4; color: #17602d; }
.status.failed { background: #fde2e1; color: #9b1c1c; }
.status.running { background: #fff4e0; color: #8a5a00; }
.examples { display: flex; flex-wrap: wrap; gap: .8rem; }
figure.example { margin: 0; width: 132px; text-align: center; font-size: 12px; }
img.example { image-rendering: pixelated; border: 1px solid #c9d1da; width: 96px; height: auto; }
.cards { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.card table { font-size: 13px; } .muted { color: #6b7685; }
nav a { margin-right: 1rem; }
"""

# No request leaves the page: images are data URIs and the style is inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_report(runs: list[RunFolder], data_dir: str | None = None, wrong_examples: int = 16) -> str:
    """The whole page as an HTML string."""
    title = f"dlzoo report: {runs[0].label}" if len(runs) == 1 else f"dlzoo report: {len(runs)} runs compared"
    made = datetime.datetime.now().isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">Made {_e(made)} from {len(runs)} run folder{"s" if len(runs) > 1 else ""}.</p>',
    ]
    if len(runs) > 1:
        links = "".join(f'<a href="#run-{i}">{_e(run.label)}</a>' for i, run in enumerate(runs))
        parts.append(f'<nav><a href="#comparison">comparison</a>{links}</nav>')
        parts.append(_comparison_section(runs))
    parts += [_run_section(run, f"run-{i}", data_dir, wrong_examples) for i, run in enumerate(runs)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _output_path(runs: list[RunFolder], output: str | Path | None) -> Path:
    name = SINGLE_NAME if len(runs) == 1 else COMPARE_NAME
    if output is None:
        return runs[0].path / name if len(runs) == 1 else Path.cwd() / name
    path = Path(output)
    return path / name if path.is_dir() else path


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report(
    run_dirs: list[str | Path],
    output: str | Path | None = None,
    data_dir: str | None = None,
    wrong_examples: int = 16,
) -> Path:
    """Write one self-contained HTML page about ``run_dirs`` and return its path.

    One run: ``<run>/report.html`` by default. Several: a comparison (validation curves overlaid,
    test metrics and differing settings side by side) then each run, ``./report-compare.html``
    by default. ``data_dir`` says where the runs' data is if not where they were trained.
    """
    if not run_dirs:
        raise ValueError("no run folder given: name at least one, e.g. runs/<recipe>/<timestamp>")
    if wrong_examples < 0:
        raise ValueError(f"wrong_examples (--wrong-examples) must be 0 or more, got {wrong_examples}")
    seen: set[Path] = set()
    for run_dir in run_dirs:
        resolved = Path(run_dir).resolve()
        if resolved in seen:
            raise ValueError(f"run folder {run_dir} is given twice; name each run once")
        seen.add(resolved)
    runs = [read_run(run_dir) for run_dir in run_dirs]
    path = _output_path(runs, output)
    _write_atomic(path, render_report(runs, data_dir, wrong_examples))
    return path
