"""The README's results table, rebuilt from run folders, so every number names the command and the
runs that produced it (``dlzoo results``).

Which runs count: the finished runs under ``<runs_dir>/<recipe>/`` whose config equals the
recipe's config apart from the seed, where files live, how verbose the run was and how many
threads, which memory format and which evaluation batch size it computed with (``train.seed``,
``data.data_dir``, ``data.download``, ``log.*``, ``train.threads``, ``train.channels_last``,
``data.eval_batch_size``: none changes what is learned; ``[meta]`` is the
recipe's evidence and may be updated after the runs). Of several such runs with the same seed,
the newest counts. A run with any other difference (``--epochs 1``, ``--set optim.lr=...``) is
not the recipe as written: it is left out and named in ``ResultsTable.excluded`` with the keys
that differ, or, with ``with_overrides``, gets a row of its own per set of differences, labelled
with them.

Each row: test accuracy (mean, and per seed) from ``run.json``'s test metrics, epochs run, seeds,
mean training time (``run.json`` ``train_seconds``: training only, not start-up or the test) with
the torch threads it used, the data source, the command (as ``run.json`` recorded it; rebuilt
from the config and marked † for runs that did not record one) and the recipe's ``[meta]``
source and source result. A recipe without runs shows the result its ``[meta]`` table records,
marked "recorded in recipe", or "not measured".

The "vs source" column compares the result with the first percentage in ``source_result``:
``beats (+4.21)`` in percentage points, or ``below (-3.10): <why>`` with the recipe's
``[meta] shortfall`` (a result below its source must say why).

``--write FILE`` replaces only the text between ``<!-- results:start -->`` and
``<!-- results:end -->`` in FILE, atomically, with a row for every shipped recipe. Rows of
recipes that have no runs here (or that ``--recipes`` left out) keep FILE's line where that line
still shows the result the recipe's ``[meta]`` records (same accuracy, same seeds): a line rebuilt
from runs in another checkout keeps its per-seed numbers instead of falling back to "recorded in
recipe". ``--record`` writes each measured recipe's
numbers (``result``, ``result_command``, ``result_data``, ``result_seeds``,
``result_minutes``, ``result_compute``) into the ``[meta]`` table of its recipe file, so the
table can be rebuilt where the run folders are not (a fresh clone): no number is copied by hand.

The training time names what computed it (threads; the CPU's instruction set or the GPU; float32
or bf16 autocast, from ``run.json``): the same budget takes minutes on one CPU and an hour on
another.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlzoo.config import MetaConfig, RunConfig
from dlzoo.recipes import load_recipe, recipe_names, recipe_path
from dlzoo.training.resume import _flatten
from dlzoo.training.run import read_json


def markers(section: str) -> tuple[str, str]:
    """The comments around a generated ``section`` of a markdown file."""
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


MARKERS = markers("results")
SAME_RECIPE_KEYS = (
    "train.seed",
    "train.threads",
    "train.reuse_memory",
    "train.channels_last",
    "data.eval_batch_size",
    "data.data_dir",
    "data.download",
    "log.",
    "meta.",
)
"""Config keys (or key prefixes) in which a run may differ from its recipe and still count as it."""
HEADER = (
    "recipe",
    "model",
    "data",
    "epochs",
    "seeds",
    "test accuracy",
    "training time",
    "command",
    "source",
    "source reported",
    "vs source",
)
REBUILT = "†"
RECORDED_KEYS = (
    "result",
    "result_command",
    "result_data",
    "result_seeds",
    "result_minutes",
    "result_compute",
)
"""The ``[meta]`` keys that ``--record`` writes (and replaces)."""


@dataclass
class MeasuredRun:
    """The facts of one finished run that the table shows."""

    folder: Path
    seed: int
    test: dict[str, float]
    epochs: int
    seconds: float
    threads: int | None
    """torch's intra-op threads during training (``run.json`` machine facts)."""
    compute: str
    """What computed it: the GPU, or the CPU's instruction set where recorded, and the precision
    (``AVX512, bf16``; see :func:`compute_of`)."""
    data: str
    command: str
    recorded: bool
    """Whether ``command`` is the one the run recorded (else rebuilt from its config)."""


@dataclass
class ResultRow:
    """One line of the table: a recipe as written, or a recipe with one set of overrides."""

    cfg: RunConfig
    recipe_file: Path
    """The recipe's TOML file (where ``--record`` writes)."""
    runs: list[MeasuredRun] = field(default_factory=list)
    """One run per seed, by seed."""
    differences: list[str] = field(default_factory=list)
    """``key=value`` overrides that set these runs apart from the recipe (empty: the recipe as written)."""

    @property
    def label(self) -> str:
        return f"{self.cfg.recipe} ({', '.join(self.differences)})" if self.differences else self.cfg.recipe


@dataclass
class ResultsTable:
    rows: list[ResultRow]
    excluded: list[str]
    """``folder: why`` for every run folder that was left out."""
    markdown: str
    recorded: list[Path] = field(default_factory=list)
    """The recipe files whose ``[meta]`` got these numbers (``--record``)."""
    kept: int = 0
    """How many lines of the written file's earlier table ``--write`` kept (recipes measured elsewhere)."""


def as_text(value: Any) -> str:
    """A config value as ``--set`` parses it back."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def differences(recipe: RunConfig, run: RunConfig) -> list[str]:
    """``key=value`` for every setting of ``run`` that differs from ``recipe``, allowed keys aside."""
    before, after = _flatten(recipe.to_dict()), _flatten(run.to_dict())
    return [
        f"{key}={as_text(after.get(key))}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and not key.startswith(SAME_RECIPE_KEYS)
    ]


def rebuilt_command(cfg: RunConfig, overrides: list[str]) -> str:
    """The ``dlzoo train`` command that trains ``cfg``: the recipe, its data folder, seed and overrides."""
    words = ["dlzoo", "train", cfg.recipe]
    if cfg.data.data_dir:
        words += ["--data-dir", cfg.data.data_dir]
    words += ["--seed", str(cfg.train.seed)]
    for item in overrides:
        words += ["--set", item]
    return shlex.join(words)


def relative_paths(text: str) -> str:
    """``text`` with each absolute path written relative to the working folder where that is
    shorter (``/home/me/dlzoo/../shared/data/x.zip`` -> ``../shared/data/x.zip``): the table
    should not carry one machine's folders."""

    def shorter(found: re.Match[str]) -> str:
        relative = os.path.relpath(found.group(0))
        return relative if len(relative) < len(found.group(0)) else found.group(0)

    return re.sub(r"(?<![\w.])/[^\s,;()]+", shorter, text)


def compute_of(info: dict[str, Any]) -> str:
    """``AVX512, bf16`` / ``AVX2, float32`` / ``NVIDIA A100, bf16`` from a ``run.json``: the same
    recipe trains at very different speeds (and in another precision) on another processor. Runs
    made before dlzoo recorded the CPU's instruction set give the precision alone."""
    machine = info.get("machine", {})
    device = machine.get("cuda_device") or machine.get("cpu_capability")
    bf16 = info.get("precision", {}).get("bf16_autocast")
    precision = None if bf16 is None else "bf16" if bf16 else "float32"
    return ", ".join(part for part in (device, precision) if part)


def measured_run(folder: Path, cfg: RunConfig, overrides: list[str]) -> MeasuredRun:
    info = read_json(folder / "run.json")
    recorded = str(info.get("command", ""))
    is_cli = recorded.startswith("dlzoo ")
    data = info.get("data", {})
    return MeasuredRun(
        folder=folder,
        seed=cfg.train.seed,
        test=info.get("test", {}),
        epochs=info.get("epochs_run", cfg.train.epochs),
        seconds=float(info.get("train_seconds", 0.0)),
        threads=info.get("machine", {}).get("torch_threads"),
        compute=compute_of(info),
        data=relative_paths(f"{data.get('source', '?')}, {data.get('test', 0):,} test"),
        command=relative_paths(recorded) if is_cli else rebuilt_command(cfg, overrides),
        recorded=is_cli,
    )


def recipe_rows(
    runs_dir: Path, recipe: RunConfig, recipe_file: Path, with_overrides: bool
) -> tuple[list[ResultRow], list[str]]:
    """The rows of one recipe (the recipe as written first) and the folders left out, with why."""
    rows: dict[tuple[str, ...], ResultRow] = {}
    excluded: list[str] = []
    parent = runs_dir / recipe.recipe
    folders = sorted(p for p in parent.iterdir() if (p / "run.json").is_file()) if parent.is_dir() else []
    for folder in folders:  # oldest first: a newer run of the same seed replaces an older one
        status = read_json(folder / "run.json").get("status")
        if status != "finished":
            excluded.append(f"{folder}: not finished ({status})")
            continue
        try:
            raw = read_json(folder / "config.json")
            cfg = RunConfig.from_dict(raw, raw.pop("recipe"))
        except (OSError, ValueError, TypeError, KeyError) as error:
            excluded.append(f"{folder}: its config.json does not load with this dlzoo ({error})")
            continue
        overrides = differences(recipe, cfg)
        if overrides and not with_overrides:
            excluded.append(f"{folder}: not the recipe as written ({', '.join(overrides)})")
            continue
        cfg = dataclasses.replace(cfg, meta=recipe.meta)  # the evidence as the recipe states it now
        row = rows.setdefault(tuple(overrides), ResultRow(cfg, recipe_file, differences=overrides))
        row.runs = [run for run in row.runs if run.seed != cfg.train.seed]
        row.runs.append(measured_run(folder, cfg, overrides))
    for row in rows.values():
        row.runs.sort(key=lambda run: run.seed)
    ordered = sorted(rows.values(), key=lambda row: (bool(row.differences), row.label))
    return ordered or [ResultRow(recipe, recipe_file)], excluded


def build_results(
    runs_dir: Path, recipes: list[str] | None = None, with_overrides: bool = False
) -> ResultsTable:
    """The results table of ``recipes`` (default: every shipped recipe) from the runs in ``runs_dir``."""
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} not found; give the folder `dlzoo train` wrote to")
    rows: list[ResultRow] = []
    excluded: list[str] = []
    for name in recipes or recipe_names():
        recipe_file = Path(name) if name.endswith(".toml") else recipe_path(name)
        found, left_out = recipe_rows(runs_dir, load_recipe(name), recipe_file, with_overrides)
        rows += found
        excluded += left_out
    return ResultsTable(rows, excluded, render_markdown(rows))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _how_computed(runs: list[MeasuredRun]) -> str:
    """``1 thread; AVX512, bf16``: the threads and the compute of ``runs``."""
    threads = _distinct([str(run.threads) for run in runs if run.threads])
    parts = [
        f"{threads} thread{'' if threads == '1' else 's'}" if threads else "",
        _distinct([r.compute for r in runs]),
    ]
    return "; ".join(part for part in parts if part)


def _training_time(runs: list[MeasuredRun]) -> str:
    mean = _duration(statistics.mean(run.seconds for run in runs))
    how = _how_computed(runs)
    return f"{mean} ({how})" if how else mean


def _accuracy(runs: list[MeasuredRun]) -> str:
    """``**98.05%** mean (98.05 / 98.33 / 97.77)``; the test loss for tasks without accuracy."""
    if not all("test_accuracy" in run.test for run in runs):
        losses = [run.test.get("test_loss", float("nan")) for run in runs]
        return f"test loss {statistics.mean(losses):.4g}" + (
            f" mean ({' / '.join(f'{v:.4g}' for v in losses)})" if len(runs) > 1 else ""
        )
    values = [run.test["test_accuracy"] for run in runs]
    if len(values) == 1:
        return f"**{_percent(values[0])}**"
    per_seed = " / ".join(f"{v * 100:.2f}" for v in values)
    return f"**{_percent(statistics.mean(values))}** mean ({per_seed})"


def _commands(runs: list[MeasuredRun]) -> str:
    """One command with ``N`` for the seed when the runs differ only in it, else one per run."""

    def shown(command: str, recorded: bool) -> str:
        return f"`{command}`" + ("" if recorded else REBUILT)

    recorded = all(run.recorded for run in runs)
    seed_free = {re.sub(rf"(--seed[ =]|train\.seed=){run.seed}(?!\d)", r"\1N", run.command) for run in runs}
    if len(runs) > 1 and len(seed_free) == 1:
        return shown(seed_free.pop(), recorded)
    return "<br>".join(shown(run.command, run.recorded) for run in runs)


def _distinct(values: list[str]) -> str:
    return " / ".join(dict.fromkeys(values))


def source_percent(source_result: str) -> float | None:
    """The first percentage in the source's reported result, as a fraction (None if it has none,
    or if it starts with "n/a": a number it quotes then belongs to another experiment)."""
    if source_result.strip().lower().startswith("n/a"):
        return None
    found = re.search(r"(\d+(?:\.\d+)?)\s*%", source_result)
    return float(found.group(1)) / 100 if found else None


def versus_source(accuracy: float | None, cfg: RunConfig) -> str:
    """``beats (+4.21)`` / ``matches (+0.00)`` / ``below (-3.10): why`` in percentage points (the
    shown two decimals decide), ``-`` when either is missing."""
    source = source_percent(cfg.meta.source_result)
    if accuracy is None or source is None:
        return "-"
    difference = round((accuracy - source) * 100, 2) + 0.0  # + 0.0: no "-0.00"
    points = f"{difference:+.2f}"
    if difference > 0:
        return f"beats ({points})"
    if difference == 0:
        return f"matches ({points})"
    return f"below ({points}): {cfg.meta.shortfall or 'no reason recorded in the recipe'}"


def mean_accuracy(runs: list[MeasuredRun]) -> float | None:
    if not runs or not all("test_accuracy" in run.test for run in runs):
        return None
    return statistics.mean(run.test["test_accuracy"] for run in runs)


def render_row(row: ResultRow) -> list[str]:
    cfg, meta = row.cfg, row.cfg.meta
    source, reported = meta.source or "-", meta.source_result or "-"
    if row.runs:
        runs = row.runs
        return [
            row.label,
            cfg.model.name,
            _distinct([run.data for run in runs]),
            _distinct([str(run.epochs) for run in runs]),
            " / ".join(str(run.seed) for run in runs),
            _accuracy(runs),
            _training_time(runs),
            _commands(runs),
            source,
            reported,
            versus_source(mean_accuracy(runs), cfg),
        ]
    if meta.result:
        return [
            row.label,
            cfg.model.name,
            meta.result_data or cfg.data.name,
            str(cfg.train.epochs),
            " / ".join(map(str, meta.result_seeds)) or "-",
            f"{_percent(meta.result)} (recorded in recipe)",
            (f"{meta.result_minutes:g} min" if meta.result_minutes else "-")
            + (f" ({meta.result_compute})" if meta.result_compute else ""),
            f"`{meta.result_command}`" if meta.result_command else "-",
            source,
            reported,
            versus_source(meta.result, cfg),
        ]
    unmeasured = ["-", "not measured", "-", f"`dlzoo train {cfg.recipe}`"]
    return [
        row.label,
        cfg.model.name,
        cfg.data.name,
        str(cfg.train.epochs),
        *unmeasured,
        source,
        reported,
        "-",
    ]


def row_line(row: ResultRow) -> str:
    """One row of the markdown table."""
    return "| " + " | ".join(_cell(text) for text in render_row(row)) + " |"


def line_cells(line: str) -> list[str]:
    """The cells of a markdown table line (``\\|`` inside a cell is not a border)."""
    return re.split(r"(?<!\\) \| ", line.strip().removeprefix("| ").removesuffix(" |"))


def render_markdown(rows: list[ResultRow], lines: list[str] | None = None) -> str:
    """The table as GitHub markdown (``lines``: the rows' lines, if not rendered from ``rows``), with a
    legend line for rebuilt commands."""
    body = lines if lines is not None else [row_line(row) for row in rows]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER), *body]
    if any(REBUILT in line_cells(line)[HEADER.index("command")] for line in body):
        lines += ["", f"{REBUILT} rebuilt from the run's config: the run did not record its command line."]
    lines += [
        "",
        "Generated by `dlzoo results` from the run folders; edit the recipes or rerun, not this table.",
    ]
    return "\n".join(lines)


def split_at_markers(path: Path, section: str = "results") -> tuple[str, str, str]:
    """``path``'s text before the ``section`` start marker, between the markers, after the end marker."""
    start, end = markers(section)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --write needs a markdown file with {start} and {end}")
    content = path.read_text()
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise ValueError(
            f"{path} needs the markers {start} and {end}, once each and in that order, around the "
            "table to replace; add them and run again"
        )
    head, rest = content.split(start)
    inside, tail = rest.split(end)
    return head, inside, tail


def replace_between_markers(path: Path, text: str, section: str = "results") -> None:
    """Put ``text`` between the ``section`` markers of ``path``; nothing outside them changes."""
    head, _, tail = split_at_markers(path, section)
    start, end = markers(section)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{head}{start}\n{text.strip()}\n{end}{tail}")
    os.replace(tmp, path)


def shows_record(line: str, meta: MetaConfig) -> bool:
    """Whether ``line``, of an earlier table, was rebuilt from runs that gave the result ``meta``
    records: the same mean accuracy and seeds."""
    cells = line_cells(line)
    if meta.result is None or len(cells) != len(HEADER):
        return False
    accuracy, seeds = cells[HEADER.index("test accuracy")], cells[HEADER.index("seeds")]
    recorded_seeds = " / ".join(map(str, meta.result_seeds))
    return accuracy.startswith(f"**{_percent(meta.result)}**") and seeds == recorded_seeds


def write_results(path: Path, table: ResultsTable) -> int:
    """Write the results table of every shipped recipe (and of ``table``'s) into ``path``'s results
    section: ``table``'s measured rows, and for every other recipe the line ``path`` already has if
    it still shows the recipe's recorded result, else the row its ``[meta]`` gives. Returns how many
    lines were kept."""
    _, inside, _ = split_at_markers(path)
    earlier = {line_cells(line)[0]: line for line in inside.splitlines() if line.startswith("| ")}
    by_recipe: dict[str, list[ResultRow]] = {}
    for row in table.rows:
        by_recipe.setdefault(row.cfg.recipe, []).append(row)
    rows = [row for name in recipe_names() for row in by_recipe.pop(name, None) or [unmeasured_row(name)]]
    rows += [row for left in by_recipe.values() for row in left]  # recipes given as TOML files
    lines, kept = [], 0
    for row in rows:
        line = earlier.get(row.label)
        if not row.runs and line is not None and shows_record(line, row.cfg.meta):
            lines.append(with_current_source(line, row.cfg))
            kept += 1
        else:
            lines.append(row_line(row))
    replace_between_markers(path, render_markdown(rows, lines))
    return kept


def with_current_source(line: str, cfg: RunConfig) -> str:
    """``line`` with its source, source-reported and "vs source" cells as the recipe states them now."""
    meta = cfg.meta
    current = [meta.source or "-", meta.source_result or "-", versus_source(meta.result, cfg)]
    cells = line_cells(line)[: -len(current)] + [_cell(text) for text in current]
    return "| " + " | ".join(cells) + " |"


def unmeasured_row(name: str) -> ResultRow:
    """The row of shipped recipe ``name`` without runs: what its ``[meta]`` records."""
    return ResultRow(load_recipe(name), recipe_path(name))


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal (strings as basic strings, whose escapes JSON's are)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def write_meta(path: Path, values: dict[str, Any]) -> None:
    """Set ``values`` in the ``[meta]`` table of recipe file ``path``, one ``key = value`` line each,
    replacing those keys' old lines; every other line (comments included) stays as it was. The
    file is replaced atomically, and only if the result parses back to the same values."""
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "[meta]")
    except StopIteration:
        raise ValueError(f"recipe {path} has no [meta] table to record its result in; add one") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    body = [line for line in lines[start + 1 : end] if line.split("=")[0].strip() not in values]
    while body and not body[-1].strip():
        body.pop()
    new_lines = [f"{key} = {toml_value(value)}" for key, value in values.items()]
    gap = [""] if end < len(lines) else []
    text = "\n".join([*lines[: start + 1], *body, *new_lines, *gap, *lines[end:]]) + "\n"
    meta = tomllib.loads(text).get("meta", {})
    if any(meta.get(key) != value for key, value in values.items()):
        raise ValueError(f"recipe {path}: could not write {sorted(values)} into its [meta] table")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def recorded_values(row: ResultRow) -> dict[str, Any] | None:
    """The ``[meta]`` values that ``--record`` writes for a row measured as written, else None."""
    accuracy = mean_accuracy(row.runs)
    if row.differences or accuracy is None:
        return None
    commands = _commands(row.runs).replace(REBUILT, "").split("<br>")
    return {
        "result": round(accuracy, 4),
        "result_command": commands[0].strip("`"),
        "result_data": _distinct([run.data for run in row.runs]),
        "result_seeds": [run.seed for run in row.runs],
        "result_minutes": round(statistics.mean(run.seconds for run in row.runs) / 60, 1),
        "result_compute": _how_computed(row.runs),
    }


def record_results(table: ResultsTable) -> list[Path]:
    """Write every measured row's numbers into its recipe's ``[meta]``; the files written."""
    written = []
    for row in table.rows:
        values = recorded_values(row)
        if values is not None:
            write_meta(row.recipe_file, values)
            written.append(row.recipe_file)
    return written
