"""Hyperparameter sweeps with Optuna: a grid, or TPE over ranges, kept in a database.

>>> from dlzoo.sweep import print_results, sweep
>>> result = sweep("iris-softmax", ["optim.name=sgd,adam", "optim.lr=0.01,0.1"], ["train.epochs=20"])
>>> print_results(result)

Each ``--grid KEY=VALUES`` names a config field (``dlzoo.config``) and what to try:

- ``model.activation=relu,sigmoid,tanh``: a comma list of choices, parsed to the field's type
  (a list field such as ``model.hidden_sizes`` separates its choices with ``;``: ``64;128,64``);
- ``optim.lr=1e-4..1e-1:log``, ``optim.lr=0.01..0.1``, ``data.batch_size=32..256``: a range
  (float, or int when the field is an int; ``:log`` samples on a log scale).

Grid mode (every value a comma list): Optuna's ``GridSampler`` runs the full product, once each;
``--trials N`` at least as large as the grid changes nothing. TPE mode (any range, or ``--trials N``
smaller than the grid): ``TPESampler`` seeded with ``train.seed`` samples N trials, and
``MedianPruner`` stops a trial whose monitored value is worse than the median of earlier trials at
the same epoch (after 5 trials, from epoch 2 on; ``pruner="none"`` turns it off).

The objective is the monitored validation metric (``train.monitor``, direction from
``train.monitor_mode``) at the run's best epoch: hyperparameters are chosen on the validation split,
never on the test split. Each trial's test accuracy is recorded as information only.

Storage and resuming. The study lives in ``<sweep_dir>/study.db`` (SQLite) unless ``storage`` gives
another database URL that Optuna (SQLAlchemy) supports, e.g. ``postgresql://user@host/db``, so that
workers on several machines share one study: run the same command on each. Running the same sweep
again with the same storage and study name resumes it: finished trials are not repeated. A trial
that did not end by itself is run again, once per restart, with the same parameters (and grid point):

- interrupted (Ctrl-C, SIGTERM): the loop stops at a batch boundary, the trial is marked failed and
  the sweep stops (``TrainingInterrupted``); the next start queues a retry;
- killed (SIGKILL, power cut): the trial stays RUNNING in the database. Each trial records its
  worker (host, process id, and a token per ``sweep()`` call); the next start on the same host fails
  the RUNNING trials whose process is gone, and queues their retries, with no waiting. For workers on
  other machines the Optuna heartbeat (every 10 s, 30 s grace) fails a trial that stopped beating,
  from whichever worker starts a trial next, and queues its retry.

A retry starts its run from scratch, in a new run folder.

A trial that fails because training did (``TrainingError``: a non-finite loss from a too-large
learning rate) is a result, not an accident: it is recorded as failed, with the error, and not retried.
A run's sweep definition (recipe, grid, overrides, objective, mode) is stored with the study; resuming
a study with a different one is refused.

``workers=N`` runs N processes on this machine that share the study (spawned, so a script that calls
``sweep(workers=N)`` needs the ``if __name__ == "__main__":`` guard), each with ``train.threads`` set
to CPUs // N unless the recipe, ``--set`` or the grid sets it.

Outputs in ``sweep_dir`` (default ``sweeps/<recipe>/<timestamp>/``): ``study.db``, one run folder per
trial under ``trials/<number>/``, ``results.csv`` (one row per trial, best first) and ``params.png``
(the objective against each parameter).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import math
import multiprocessing
import os
import queue
import socket
import time
import traceback
import types
import typing
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import optuna
except ModuleNotFoundError:
    raise ModuleNotFoundError("dlzoo sweeps need Optuna: pip install 'dlzoo[sweep]'") from None
from optuna.trial import FrozenTrial, TrialState

from dlzoo import api
from dlzoo.config import RunConfig
from dlzoo.errors import StopRun, TrainingError, TrainingInterrupted
from dlzoo.recipes import load_recipe

HEARTBEAT_SECONDS = 10
"""How often a running trial writes its heartbeat to the database."""
GRACE_SECONDS = 30
"""A trial whose heartbeat is older than this is taken for dead (a killed worker elsewhere)."""
PRUNERS = ("auto", "median", "none")
FIXED_KEYS = ("train.monitor", "train.monitor_mode", "log.runs_dir")
"""Fields a sweep cannot vary: the objective must be the same for every trial, and the sweep owns
where runs go."""
RANGE_EXAMPLE = "optim.lr=1e-4..1e-1:log or data.batch_size=32..256"


# ---------------------------------------------------------------- what is swept


@dataclass(frozen=True)
class SearchParam:
    """One swept config field: a list of choices, or a numeric range (sampled by TPE)."""

    key: str
    """Dotted config field, e.g. ``optim.lr``."""
    choices: tuple[Any, ...] = ()
    """Typed choices (a list field's choices as its ``--set`` text); empty for a range."""
    low: float = 0.0
    high: float = 0.0
    integer: bool = False
    """Range over ints (suggest_int) instead of floats."""
    log: bool = False
    """Range sampled on a log scale."""

    @property
    def is_range(self) -> bool:
        return not self.choices

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


def as_text(value: Any) -> str:
    """A typed config value as ``--set`` text that parses back to it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _field_type(cfg: RunConfig, key: str) -> Any:
    """The declared type of config field ``key``, Optional removed; an unknown key raises the
    config's own message (with its "Did you mean")."""
    *sections, name = key.split(".")
    owner: Any = cfg
    for section in sections:
        owner = getattr(owner, section, None)
    hints = typing.get_type_hints(type(owner)) if dataclasses.is_dataclass(owner) and sections else {}
    if name not in hints or dataclasses.is_dataclass(hints[name]):
        cfg.with_overrides([f"{key}=0"])  # raises: unknown section or key, or a section, not a field
        raise ValueError(f"{key} is not a config field")
    hint = hints[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else hint
    return hint


def _field_value(cfg: RunConfig, key: str) -> Any:
    value: Any = cfg
    for name in key.split("."):
        value = getattr(value, name)
    return value


def _type_word(kind: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, "a list")


def parse_param(cfg: RunConfig, item: str) -> SearchParam:
    """Parse one ``--grid KEY=VALUES`` against ``cfg``: the key must exist, every choice (or both
    range bounds) must be a valid value of the field."""
    if "=" not in item:
        raise ValueError(
            f"--grid {item}: expected KEY=VALUES, e.g. model.activation=relu,tanh or {RANGE_EXAMPLE}"
        )
    key, spec = (part.strip() for part in item.split("=", 1))
    try:
        kind = _field_type(cfg, key)
        param = _parse_spec(cfg, key, spec, kind)
    except ValueError as error:
        raise ValueError(f"--grid {item}: {str(error).removeprefix('--set ')}") from None
    if key in FIXED_KEYS:
        raise ValueError(f"--grid {item}: {key} cannot be swept (it is fixed for the whole sweep); use --set")
    return param


def _parse_spec(cfg: RunConfig, key: str, spec: str, kind: Any) -> SearchParam:
    numeric = kind in (int, float)
    if ".." in spec and numeric:
        return _parse_range(cfg, key, spec, kind)
    if ".." in spec and _looks_like_range(spec):
        raise ValueError(
            f"{key} takes {_type_word(kind)}, not a number: a range needs a numeric field; list the choices"
        )
    is_list = typing.get_origin(kind) is list
    if is_list and ";" not in spec:
        raise ValueError(
            f"{key} takes a list, so separate its choices with ';' (quote the argument), "
            f"e.g. '{key}=64;128,64'"
        )
    texts = [text.strip() for text in spec.split(";" if is_list else ",") if text.strip()]
    if not texts:
        raise ValueError(f"no values; give choices, e.g. {key}=a,b, or a range such as {RANGE_EXAMPLE}")
    choices = []
    for text in texts:
        value = _field_value(cfg.with_overrides([f"{key}={text}"]), key)  # parses and validates
        choices.append(",".join(map(str, value)) if isinstance(value, list) else value)
    if len(set(map(as_text, choices))) != len(choices):
        raise ValueError(f"a choice is repeated in {spec!r}; list each value once")
    return SearchParam(key, choices=tuple(choices))


def _looks_like_range(spec: str) -> bool:
    low, _, high = spec.partition(":")[0].partition("..")
    try:
        float(low), float(high)
    except ValueError:
        return False
    return True


def _parse_range(cfg: RunConfig, key: str, spec: str, kind: type) -> SearchParam:
    body, colon, scale = spec.partition(":")
    low_text, _, high_text = body.partition("..")
    example = f"{key}=32..256" if kind is int else f"{key}=1e-4..1e-1:log"
    malformed = (
        f"malformed range {spec!r}: expected LOW..HIGH or LOW..HIGH:log "
        f"with {_type_word(kind)} bounds, e.g. {example}"
    )
    if colon and scale != "log":
        raise ValueError(malformed)
    try:
        low, high = kind(low_text.strip()), kind(high_text.strip())
    except ValueError:
        raise ValueError(malformed) from None
    if not low < high:
        raise ValueError(f"range {spec!r}: LOW must be below HIGH, e.g. {example}")
    if colon and low <= 0:
        raise ValueError(f"range {spec!r}: a :log range needs LOW > 0, e.g. {example}")
    for bound in (low, high):
        cfg.with_overrides([f"{key}={bound}"])  # the field's own validation (e.g. optim.lr > 0)
    return SearchParam(key, low=low, high=high, integer=kind is int, log=bool(colon))


def parse_search_space(cfg: RunConfig, grid: list[str]) -> list[SearchParam]:
    """Every ``--grid`` item parsed and validated against ``cfg`` (before anything runs)."""
    if not grid:
        raise ValueError(
            "give at least one --grid KEY=VALUES, e.g. --grid optim.name=sgd,adam "
            f"(or a range with --trials N: {RANGE_EXAMPLE})"
        )
    params = [parse_param(cfg, item) for item in grid]
    keys = [param.key for param in params]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"--grid names {repeated[0]} twice; give each key once with all its values")
    return params


# ---------------------------------------------------------------- one trial


@dataclass(frozen=True)
class SweepPlan:
    """Everything a worker process needs to run its share of trials (picklable)."""

    recipe: str
    params: tuple[SearchParam, ...]
    overrides: tuple[str, ...]
    mode: str
    """grid or tpe."""
    storage: str
    study_name: str
    sweep_dir: str
    data_dir: str | None
    monitor: str
    direction: str
    """maximize or minimize."""
    seed: int
    pruner: optuna.pruners.BasePruner
    token: str
    """Identifies this ``sweep()`` call, to tell its trials from those of an earlier, dead one."""
    quiet: bool


def _run_folder(runs_dir: Path) -> str | None:
    folders = sorted(runs_dir.glob("*/*"))
    return str(folders[-1]) if folders else None


def objective(plan: SweepPlan, trial: optuna.Trial) -> float:
    """Train one trial; return the monitored validation metric at its best epoch."""
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "token": plan.token})
    settings = [f"{param.key}={as_text(param.suggest(trial))}" for param in plan.params]
    runs_dir = Path(plan.sweep_dir) / "trials" / f"{trial.number:04d}"
    epochs: list[int] = []

    def on_epoch_end(row: dict[str, Any]) -> None:
        epochs.append(row["epoch"])
        trial.report(row[plan.monitor], row["epoch"])
        if trial.should_prune():
            raise StopRun(f"pruned at epoch {row['epoch']}")

    started = time.perf_counter()
    try:
        result = api.train(
            plan.recipe,
            [*plan.overrides, *settings],
            data_dir=plan.data_dir,
            runs_dir=str(runs_dir),
            quiet=True,
            on_epoch_end=on_epoch_end,
        )
    except (StopRun, TrainingError) as error:
        trial.set_user_attr("run_dir", _run_folder(runs_dir))
        trial.set_user_attr("epochs_run", len(epochs))
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        if isinstance(error, StopRun):
            raise optuna.TrialPruned(str(error)) from None
        if isinstance(error, TrainingInterrupted):  # Ctrl-C or SIGTERM: stop the sweep; retried on resume
            raise KeyboardInterrupt from None
        trial.set_user_attr("error", str(error))  # a result of these settings: recorded, not retried
        raise
    values = [row[plan.monitor] for row in result.history]
    trial.set_user_attr("run_dir", str(result.run_dir))
    trial.set_user_attr("test_accuracy", result.test.get("test_accuracy"))
    trial.set_user_attr("epochs_run", len(result.history))
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
    return max(values) if plan.direction == "maximize" else min(values)


# ---------------------------------------------------------------- the study and its workers


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna database with heartbeats, so dead trials can be found and retried."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # wait for locks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=retry_trial,
            )
        except ImportError as error:
            raise ValueError(f"--storage {url}: {error}; install the database driver") from None


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a new trial with the parameters (and grid point) of ``trial``, which did not finish."""
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={"retry_of": trial.number},
            system_attrs=trial.system_attrs,  # GridSampler's grid_id and search_space
        )
    )


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there; leave it to the heartbeat
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abandoned(trial: FrozenTrial, token: str) -> bool:
    """A RUNNING trial of a dead worker process on this machine."""
    worker = trial.user_attrs.get("worker")
    if not worker or worker["host"] != socket.gethostname():
        return False  # unknown or on another machine: the heartbeat decides
    if worker["pid"] == os.getpid():
        return worker["token"] != token  # an earlier sweep() call in this process, since ended
    return not _process_alive(worker["pid"])


def _is_final(trial: FrozenTrial) -> bool:
    """Ended by itself: finished, pruned, or failed because training did."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def recover(study: optuna.Study, storage: optuna.storages.RDBStorage, token: str) -> int:
    """Fail the RUNNING trials of dead local workers, then queue one retry for every trial that
    failed without a training error and was not retried yet. Returns the number queued."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _abandoned(trial, token):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # it finished meanwhile
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get("retry_of") for trial in trials}
    lost = [t for t in trials if t.state == TrialState.FAIL and not _is_final(t) and t.number not in retried]
    for trial in lost:
        retry_trial(study, trial)
    return len(lost)


def remaining_trials(study: optuna.Study, target: int) -> int:
    """Trials still to start: the target less those that ended by themselves or are running now."""
    trials = study.get_trials(deepcopy=False)
    started = sum(1 for trial in trials if _is_final(trial) or trial.state == TrialState.RUNNING)
    return max(0, target - started)


def _sampler(plan: SweepPlan, worker: int, trials_so_far: int) -> optuna.samplers.BaseSampler:
    if plan.mode == "grid":
        # The seed shuffles the grid, and trial number n runs grid point n: every worker, and every
        # restart, must shuffle it the same way.
        return optuna.samplers.GridSampler({p.key: list(p.choices) for p in plan.params}, seed=plan.seed)
    # Each worker, and each restart of a sweep, gets its own stream: the same seed would propose the
    # same random start-up points again.
    seed = np.random.SeedSequence([plan.seed, worker, trials_so_far]).generate_state(1)[0]
    return optuna.samplers.TPESampler(seed=int(seed))


def run_worker(plan: SweepPlan, n_trials: int, worker: int = 0) -> None:
    """Run up to ``n_trials`` trials of the plan's study (in this process)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our lines and errors instead
    study = optuna.load_study(
        study_name=plan.study_name, storage=open_storage(plan.storage), pruner=plan.pruner
    )
    study.sampler = _sampler(plan, worker, len(study.get_trials(deepcopy=False)))
    callbacks = [] if plan.quiet else [_progress_line(plan, worker)]
    study.optimize(
        lambda trial: objective(plan, trial), n_trials=n_trials, catch=(TrainingError,), callbacks=callbacks
    )


def _progress_line(plan: SweepPlan, worker: int) -> Any:
    def say(study: optuna.Study, trial: FrozenTrial) -> None:
        settings = " ".join(f"{key}={as_text(value)}" for key, value in trial.params.items())
        value = "-" if trial.value is None else f"{trial.value:.4g}"
        state = trial.state.name.lower()
        print(
            f"[worker {worker}] trial {trial.number} {state}: {settings} -> {plan.monitor} {value}",
            flush=True,
        )

    return say


def _worker_process(plan: SweepPlan, n_trials: int, worker: int, errors: Any) -> None:
    """A spawned worker: its trials; an error goes back to the parent as (kind, message)."""
    try:
        run_worker(plan, n_trials, worker)
    except KeyboardInterrupt:
        errors.put((KeyboardInterrupt, ""))  # Ctrl-C to the process group, or SIGTERM to this worker
    except (ValueError, FileNotFoundError) as error:  # a user mistake: the same one-line message
        errors.put((FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError, str(error)))
    except Exception as error:
        traceback.print_exc()  # a bug: keep its traceback
        errors.put((RuntimeError, f"sweep worker {worker}: {type(error).__name__}: {error}"))


def _run_workers(plan: SweepPlan, n_trials: int, workers: int) -> None:
    """Split ``n_trials`` over ``workers`` processes sharing the study (spawned: nothing of this
    process's torch or database state is inherited); raise the first error a worker met."""
    if workers == 1:
        run_worker(plan, n_trials)
        return
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    shares = [n_trials // workers + (index < n_trials % workers) for index in range(workers)]
    processes = [
        context.Process(target=_worker_process, args=(plan, share, index, errors), name=f"worker {index}")
        for index, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:  # they were interrupted too; a straggler's trial is retried on resume
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        raise
    with contextlib.suppress(queue.Empty):
        kind, message = errors.get_nowait()  # the workers have exited: all sent
        raise kind(message)
    died = next((process for process in processes if process.exitcode), None)
    if died is not None:
        raise RuntimeError(
            f"sweep {died.name} died (exit code {died.exitcode}); run the sweep again to resume"
        )


# ---------------------------------------------------------------- results


@dataclass
class SweepResult:
    """A sweep's trials, best first, and where its files are."""

    rows: list[dict[str, Any]]
    """One dict per trial (columns of results.csv), sorted by the objective, best first."""
    csv_path: Path
    plot_path: Path
    study_name: str
    storage: str
    sweep_dir: Path
    objective: str
    """The monitored metric the objective is the best epoch's value of (e.g. val_loss)."""
    direction: str
    params: list[str] = field(default_factory=list)
    """Swept keys, in --grid order."""

    @property
    def best(self) -> dict[str, Any] | None:
        """The best finished trial's row."""
        return self.rows[0] if self.rows and self.rows[0]["state"] == "complete" else None


def result_rows(study: optuna.Study, keys: list[str], direction: str) -> list[dict[str, Any]]:
    """One row per trial, best first; a trial superseded by its retry is left out."""
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get("retry_of") for trial in trials}
    rows = []
    for trial in trials:
        if trial.number in retried:
            continue
        attrs = trial.user_attrs
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name.lower(),
                **{key: trial.params.get(key) for key in keys},
                "objective": trial.value,
                "test_accuracy": attrs.get("test_accuracy"),
                "epochs": attrs.get("epochs_run"),
                "seconds": attrs.get("seconds"),
                "run_dir": attrs.get("run_dir"),
            }
        )
    rank = {"complete": 0, "pruned": 1}
    sign = -1.0 if direction == "maximize" else 1.0

    def order(row: dict[str, Any]) -> tuple[int, float, int]:
        value = math.inf if row["objective"] is None else sign * row["objective"]
        return rank.get(row["state"], 2), value, row["number"]

    return sorted(rows, key=order)


def write_csv(rows: list[dict[str, Any]], path: Path, columns: list[str]) -> Path:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in columns})
    os.replace(tmp, path)
    return path


def plot_params(
    rows: list[dict[str, Any]], params: list[SearchParam], objective_name: str, path: Path
) -> Path:
    """The objective against each parameter, finished trials only: a box with the points for choices,
    a scatter for ranges (log x for log ranges)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    done = [row for row in rows if row["state"] == "complete" and row["objective"] is not None]
    figure, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.6), squeeze=False, sharey=True)
    for axes_one, param in zip(axes[0], params):
        if param.is_range:
            axes_one.scatter(
                [row[param.key] for row in done],
                [row["objective"] for row in done],
                color="tab:blue",
                alpha=0.8,
            )
            if param.log:
                axes_one.set_xscale("log")
        else:
            groups = [[row["objective"] for row in done if row[param.key] == c] for c in param.choices]
            filled = [index for index, group in enumerate(groups) if group]
            if filled:
                axes_one.boxplot([groups[i] for i in filled], positions=filled, widths=0.5, showfliers=False)
            for index, group in enumerate(groups):
                spread = 0.1 if len(group) > 1 else 0.0  # side by side, so equal values stay visible
                axes_one.scatter(
                    index + np.linspace(-spread, spread, len(group)),
                    group,
                    color="tab:blue",
                    alpha=0.8,
                    zorder=3,
                )
            axes_one.set_xticks(range(len(param.choices)), [as_text(c) for c in param.choices])
        axes_one.set_xlabel(param.key)
        axes_one.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"best {objective_name}")
    figure.suptitle(f"best {objective_name} per trial ({len(done)} finished trials)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def print_results(result: SweepResult, console: Any = None) -> None:
    """The trials as a table, best first (rich)."""
    from rich.console import Console
    from rich.table import Table

    better = "higher" if result.direction == "maximize" else "lower"
    title = f"{result.study_name}: best {result.objective} per trial ({better} is better), best first"
    table = Table(
        "#", "state", *result.params, f"best {result.objective}", "test acc", "epochs", "s", title=title
    )
    for row in result.rows:
        cells = [row["number"], row["state"], *(row[key] for key in result.params)]
        cells += [row["objective"], row["test_accuracy"], row["epochs"], row["seconds"]]
        table.add_row(
            *("-" if c is None else f"{c:.4g}" if isinstance(c, float) else as_text(c) for c in cells)
        )
    (console or Console(width=200)).print(table)


# ---------------------------------------------------------------- the sweep


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _resolve_pruner(pruner: str | optuna.pruners.BasePruner, mode: str) -> optuna.pruners.BasePruner:
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner not in PRUNERS:
        raise ValueError(f"pruner must be one of {', '.join(PRUNERS)} (or an Optuna pruner), got {pruner!r}")
    if pruner == "median" or (pruner == "auto" and mode == "tpe"):
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def _choose_mode(params: list[SearchParam], trials: int | None) -> tuple[str, int]:
    """(grid or tpe, the number of trials the study should hold)."""
    if trials is not None and trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    ranges = [param.key for param in params if param.is_range]
    if ranges:
        if trials is None:
            raise ValueError(
                f"{ranges[0]} is a range, which is sampled, not enumerated: "
                "give --trials N (TPE), or list its values"
            )
        return "tpe", trials
    grid_size = math.prod(len(param.choices) for param in params)
    if trials is None or trials >= grid_size:
        return "grid", grid_size
    return "tpe", trials


def _open_study(
    plan: SweepPlan, storage: optuna.storages.RDBStorage, definition: dict[str, Any]
) -> optuna.Study:
    """Create the study, or load it to resume; a study holding another sweep is refused."""
    study = optuna.create_study(
        storage=storage, study_name=plan.study_name, direction=plan.direction, load_if_exists=True
    )
    stored = study.user_attrs.get("dlzoo_sweep")
    if stored is None and not study.trials:
        study.set_user_attr("dlzoo_sweep", definition)
    elif stored != definition:
        raise ValueError(
            f"study {plan.study_name!r} in {plan.storage} holds another sweep ({stored}); "
            "resume it with the same recipe, --grid and --set, or give a new --study name"
        )
    return study


def sweep(
    recipe: str,
    grid: list[str],
    overrides: list[str] | None = None,
    trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    sweep_dir: str | None = None,
    data_dir: str | None = None,
    quiet: bool = True,
    pruner: str | optuna.pruners.BasePruner = "auto",
) -> SweepResult:
    """Run (or resume) a sweep of ``recipe`` over ``grid``; see the module docstring.

    ``pruner``: auto (median for TPE, none for a grid), median, none, or an Optuna pruner object.
    Every mistake in the recipe, overrides or grid raises ``ValueError`` before anything is written.
    """
    overrides = list(overrides or [])
    cfg = load_recipe(recipe, overrides)
    params = parse_search_space(cfg, grid)
    mode, target = _choose_mode(params, trials)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if storage is not None and "://" not in storage:
        raise ValueError(f"--storage {storage} is not a database URL: give e.g. sqlite:///study.db")
    run_overrides = list(overrides)
    if workers > 1 and not cfg.train.threads and "train.threads" not in [p.key for p in params]:
        run_overrides.append(f"train.threads={max(1, _cpu_count() // workers)}")  # workers*threads <= cpus

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(sweep_dir) if sweep_dir else Path("sweeps") / cfg.recipe / stamp
    folder.mkdir(parents=True, exist_ok=True)
    plan = SweepPlan(
        recipe=recipe,
        params=tuple(params),
        overrides=tuple(run_overrides),
        mode=mode,
        storage=storage or f"sqlite:///{(folder / 'study.db').resolve()}",
        study_name=study_name or f"{cfg.recipe}-sweep",
        sweep_dir=str(folder),
        data_dir=data_dir,
        monitor=cfg.train.monitor,
        direction="maximize" if cfg.train.monitor_mode == "max" else "minimize",
        seed=cfg.train.seed,
        pruner=_resolve_pruner(pruner, mode),
        token=uuid.uuid4().hex,
        quiet=quiet,
    )
    definition = {
        "recipe": cfg.recipe,
        "grid": [item.strip() for item in grid],
        "overrides": overrides,
        "objective": plan.monitor,
        "direction": plan.direction,
        "mode": mode,
    }
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our lines and errors instead
    database = open_storage(plan.storage)
    study = _open_study(plan, database, definition)
    retries = recover(study, database, plan.token)
    n_trials = remaining_trials(study, target)
    if not quiet:
        print(
            f"study {plan.study_name} ({mode}, {target} trials): {n_trials} to run"
            f"{f', {retries} of them retries of unfinished trials' if retries else ''}; {plan.storage}"
        )
    if n_trials:
        try:
            _run_workers(plan, n_trials, min(workers, n_trials))
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"sweep interrupted; the unfinished trials run again when you resume with the same "
                f"command and --sweep-dir {folder}" + (f" --storage {storage}" if storage else "")
            ) from None

    keys = [param.key for param in params]
    rows = result_rows(study, keys, plan.direction)
    columns = ["number", "state", *keys, "objective", "test_accuracy", "epochs", "seconds", "run_dir"]
    return SweepResult(
        rows=rows,
        csv_path=write_csv(rows, folder / "results.csv", columns),
        plot_path=plot_params(rows, params, plan.monitor, folder / "params.png"),
        study_name=plan.study_name,
        storage=plan.storage,
        sweep_dir=folder,
        objective=plan.monitor,
        direction=plan.direction,
        params=keys,
    )


__all__ = ["SearchParam", "SweepResult", "parse_search_space", "print_results", "sweep"]
