"""Sweeps on the bundled iris data with 3-epoch runs: a grid runs each point once in its own run
folder, a mistake stops the sweep before anything is written, a finished, interrupted or killed
sweep resumes without repeating work, TPE samples inside its ranges, the pruner stops a bad trial,
and two worker processes share one study."""

import csv
import itertools
import json
import math
import os
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dlzoo import api
from dlzoo.errors import TrainingError, TrainingInterrupted
from dlzoo.sweep import SearchParam, SweepPlan, objective, sweep

QUICK = ["train.epochs=3", "train.threads=1", "log.tensorboard=false", "log.plots=false"]
GRID = ["optim.name=sgd,adam", "optim.lr=0.01,0.1"]
POINTS = {(name, lr) for name, lr in itertools.product(["sgd", "adam"], [0.01, 0.1])}


def patch_train(monkeypatch, stop_at_call: int = 0, stop_with: type[BaseException] = TrainingInterrupted):
    """Count ``dlzoo.api.train`` calls (their overrides); raise ``stop_with`` on call ``stop_at_call``."""
    calls: list[list[str]] = []
    real_train = api.train

    def train(recipe, overrides=None, **kwargs):
        calls.append(list(overrides or []))
        if len(calls) == stop_at_call:
            raise stop_with(f"stopped by the test at call {stop_at_call}")
        return real_train(recipe, overrides, **kwargs)

    monkeypatch.setattr(api, "train", train)
    return calls


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def study_trials(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{sweep_dir / 'study.db'}"
    return optuna.load_study(study_name="iris-softmax-sweep", storage=storage).trials


def points(rows) -> set[tuple[str, float]]:
    return {(row["optim.name"], float(row["optim.lr"])) for row in rows}


def test_grid_runs_each_point_once_and_ranks_by_validation(tmp_path, monkeypatch):
    calls = patch_train(monkeypatch)
    result = sweep("iris-softmax", GRID, QUICK, sweep_dir=str(tmp_path))
    assert len(calls) == 4
    rows = read_rows(result.csv_path)
    assert len(rows) == 4 and {row["state"] for row in rows} == {"complete"}
    assert points(rows) == POINTS
    objectives = [float(row["objective"]) for row in rows]
    assert objectives == sorted(objectives)  # iris-softmax monitors val_loss (min): best first
    assert len({row["run_dir"] for row in rows}) == 4
    for row in rows:
        run = Path(row["run_dir"])
        assert run.is_relative_to(tmp_path / "trials")
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(history) == int(row["epochs"]) == 3
        # the objective is the best validation epoch, never the test split
        assert math.isclose(float(row["objective"]), min(epoch["val_loss"] for epoch in history))
        assert 0 <= float(row["test_accuracy"]) <= 1
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.best == result.rows[0] and result.best["number"] == int(rows[0]["number"])


@pytest.mark.parametrize(
    ("grid", "trials", "message"),
    [
        (["model.activaton=relu,tanh"], None, "Did you mean 'activation'"),
        (["optm.lr=0.1,0.2"], None, "Did you mean 'optim'"),
        (["model.init=he,xavierr"], None, "Did you mean 'xavier'"),
        (["optim.lr=0.1,fast"], None, "must be a number"),
        (["optim.lr=1e-4.."], 3, "malformed range"),
        (["optim.lr=1e-3..1:sqrt"], 3, "malformed range"),
        (["data.batch_size=1.5..8"], 3, "integer bounds"),
        (["optim.lr=0.1..0.01"], 3, "LOW must be below HIGH"),
        (["optim.lr=0..1:log"], 3, "LOW > 0"),
        (["optim.name=1..2"], 3, "range needs a numeric field"),
        (["model.hidden_sizes=64,32"], None, "separate its choices with ';'"),
        (["optim.name="], None, "no values"),
        (["optim.name=sgd,sgd"], None, "repeated"),
        (["optim.name=sgd", "optim.name=adam"], None, "twice"),
        (["train.monitor=val_accuracy,val_loss"], None, "cannot be swept"),
        (["optim.lr=1e-3..1:log"], None, "give --trials N"),
        ([], None, "at least one --grid"),
    ],
)
def test_a_mistake_stops_before_anything_runs_or_is_written(tmp_path, monkeypatch, grid, trials, message):
    calls = patch_train(monkeypatch)
    with pytest.raises(ValueError, match=message) as error:
        sweep("iris-softmax", grid, QUICK, trials=trials, sweep_dir=str(tmp_path / "sweep"))
    assert "\n" not in str(error.value)
    assert calls == [] and not (tmp_path / "sweep").exists()


def test_finished_sweep_runs_nothing_again_and_refuses_another_grid(tmp_path, monkeypatch):
    calls = patch_train(monkeypatch)
    sweep("iris-softmax", GRID, QUICK, sweep_dir=str(tmp_path))
    first = read_rows(tmp_path / "results.csv")
    calls.clear()
    again = sweep("iris-softmax", GRID, QUICK, sweep_dir=str(tmp_path))
    assert calls == [] and len(study_trials(tmp_path)) == 4
    assert read_rows(again.csv_path) == first
    with pytest.raises(ValueError, match="holds another sweep"):
        sweep("iris-softmax", ["optim.name=sgd,adam"], QUICK, sweep_dir=str(tmp_path))
    assert calls == []


@pytest.mark.parametrize("stop_with", [TrainingInterrupted, SystemExit], ids=["interrupted", "killed"])
def test_stopped_sweep_finishes_only_the_remaining_points(tmp_path, monkeypatch, stop_with):
    # Ctrl-C or SIGTERM makes the loop raise TrainingInterrupted: the trial is marked failed and
    # the sweep stops. SystemExit escapes Optuna and leaves the trial RUNNING in the database, as
    # a killed process does.
    patch_train(monkeypatch, stop_at_call=3, stop_with=stop_with)
    with pytest.raises(stop_with, match="sweep interrupted" if stop_with is TrainingInterrupted else "test"):
        sweep("iris-softmax", GRID, QUICK, sweep_dir=str(tmp_path))
    states = sorted(trial.state.name for trial in study_trials(tmp_path))
    left = "FAIL" if stop_with is TrainingInterrupted else "RUNNING"
    assert states == sorted(["COMPLETE", "COMPLETE", left])

    calls = patch_train(monkeypatch)
    result = sweep("iris-softmax", GRID, QUICK, sweep_dir=str(tmp_path))
    assert len(calls) == 2  # the stopped point again, and the one never started
    rows = read_rows(result.csv_path)
    assert len(rows) == 4 and {row["state"] for row in rows} == {"complete"} and points(rows) == POINTS
    trials = study_trials(tmp_path)
    stopped = next(trial for trial in trials if trial.state == TrialState.FAIL)
    retry = next(trial for trial in trials if trial.user_attrs.get("retry_of") == stopped.number)
    assert retry.state == TrialState.COMPLETE and retry.params == stopped.params


def test_a_failed_training_is_a_result_not_retried(tmp_path, monkeypatch):
    patch_train(monkeypatch, stop_at_call=2, stop_with=TrainingError)
    result = sweep("iris-softmax", GRID, QUICK, sweep_dir=str(tmp_path))  # the sweep goes on
    assert [row["state"] for row in result.rows] == ["complete"] * 3 + ["fail"]
    failed = next(trial for trial in study_trials(tmp_path) if trial.state == TrialState.FAIL)
    assert failed.user_attrs["error"] == "stopped by the test at call 2"
    calls = patch_train(monkeypatch)
    sweep("iris-softmax", GRID, QUICK, sweep_dir=str(tmp_path))
    assert calls == []


def test_tpe_samples_inside_the_ranges(tmp_path, monkeypatch):
    calls = patch_train(monkeypatch)
    grid = ["optim.lr=1e-3..1:log", "data.batch_size=16..64", "optim.name=sgd,adam"]
    result = sweep("iris-softmax", grid, QUICK, trials=3, sweep_dir=str(tmp_path))
    assert len(calls) == 3
    rows = read_rows(result.csv_path)
    assert len(rows) == 3 and len({row["number"] for row in rows}) == 3
    for row, call in zip(sorted(rows, key=lambda r: int(r["number"])), calls):
        assert 1e-3 <= float(row["optim.lr"]) <= 1
        assert 16 <= int(row["data.batch_size"]) <= 64  # an int field samples ints
        assert f"data.batch_size={row['data.batch_size']}" in call
    assert result.plot_path.is_file()


def test_pruner_stops_a_hopeless_trial(tmp_path):
    # With a 100-epoch warm-up the learning rate stays near 0 and val_loss near its start (~0.93),
    # above the threshold after the first epoch; without it val_loss is ~0.79 after one epoch.
    result = sweep(
        "iris-softmax",
        ["schedule.warmup_epochs=0,100"],
        QUICK,
        sweep_dir=str(tmp_path),
        pruner=optuna.pruners.ThresholdPruner(upper=0.86),
    )
    assert [(row["state"], row["schedule.warmup_epochs"]) for row in result.rows] == [
        ("complete", 0.0),
        ("pruned", 100.0),
    ]
    pruned = result.rows[1]
    assert pruned["epochs"] == 1 and pruned["test_accuracy"] is None
    assert json.loads((Path(pruned["run_dir"]) / "run.json").read_text())["status"] == "stopped"


def test_median_pruner_stops_a_trial_worse_than_the_earlier_ones(tmp_path):
    # The objective's prune path with TPE's default pruner: one earlier trial reached val_loss 0.5
    # at every epoch; a trial still near 0.93 after its first epoch is stopped there.
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    study.add_trial(optuna.trial.create_trial(value=0.5, intermediate_values={1: 0.5, 2: 0.5, 3: 0.5}))
    plan = SweepPlan(
        recipe="iris-softmax",
        params=(SearchParam("schedule.warmup_epochs", choices=(100.0,)),),
        overrides=tuple(QUICK),
        mode="tpe",
        storage="memory",
        study_name=study.study_name,
        sweep_dir=str(tmp_path),
        data_dir=None,
        monitor="val_loss",
        direction="minimize",
        seed=0,
        pruner=study.pruner,
        token="test",
        quiet=True,
    )
    study.optimize(lambda trial: objective(plan, trial), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["epochs_run"] == 1
    assert trial.intermediate_values[1] > 0.5


def test_two_workers_share_one_study(tmp_path):
    no_threads = [item for item in QUICK if not item.startswith("train.threads")]  # the sweep sets it
    result = sweep("iris-softmax", GRID, no_threads, workers=2, sweep_dir=str(tmp_path))
    rows = read_rows(result.csv_path)
    assert len(rows) == 4 and {row["state"] for row in rows} == {"complete"} and points(rows) == POINTS
    assert len({row["run_dir"] for row in rows}) == 4
    workers = {trial.user_attrs["worker"]["pid"] for trial in study_trials(tmp_path)}
    assert len(workers) == 2 and os.getpid() not in workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    config = json.loads((Path(rows[0]["run_dir"]) / "config.json").read_text())
    assert config["train"]["threads"] == max(1, cpus // 2)  # workers * threads <= cpus
