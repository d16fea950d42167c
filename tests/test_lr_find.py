"""The LR range test on the bundled digits: the lr ramp, the files it writes, the suggestion,
early stopping, and the command line."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import dlzoo.api as dlzoo
from dlzoo.cli import main
from dlzoo.training.lr_find import suggest

QUICK = ["train.threads=1", "data.batch_size=64"]


@pytest.fixture(scope="module")
def two_probes(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    first = dlzoo.lr_find("digits-lenet5", QUICK, start=1e-5, end=0.05, steps=20, runs_dir=str(runs))
    second = dlzoo.lr_find("digits-lenet5", QUICK, start=1e-5, end=0.05, steps=20, runs_dir=str(runs))
    return first, second


def read_rows(folder):
    with open(f"{folder}/lr_find.csv") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_writes_csv_png_and_json_into_a_new_folder(two_probes):
    first, second = two_probes
    for result in two_probes:
        folder = Path(result["folder"])
        assert folder.parent.name == "digits-lenet5" and folder.name.startswith("lr-find-")
        for name in ("lr_find.csv", "lr_find.png", "lr_find.json"):
            assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
        assert json.loads((folder / "lr_find.json").read_text()) == result
        assert len(read_rows(folder)) == result["steps_run"]
    assert first["folder"] != second["folder"], "a second call must not overwrite the first"


def test_lr_grows_geometrically_from_start_to_end(two_probes):
    result = two_probes[0]
    assert result["steps_run"] == 20, result["ended"]  # this gentle range never diverges
    lrs = np.array([row["lr"] for row in read_rows(result["folder"])])
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(0.05)
    ratios = lrs[1:] / lrs[:-1]
    assert np.allclose(ratios, (0.05 / 1e-5) ** (1 / 19))


def test_loss_is_recorded_and_smoothed(two_probes):
    rows = read_rows(two_probes[0]["folder"])
    assert all(math.isfinite(row["loss"]) for row in rows)
    assert rows[0]["smoothed_loss"] == pytest.approx(rows[0]["loss"])  # bias-corrected average
    raw_jumps = np.abs(np.diff([row["loss"] for row in rows])).sum()
    smooth_jumps = np.abs(np.diff([row["smoothed_loss"] for row in rows])).sum()
    assert smooth_jumps < raw_jumps


def test_suggestion_lies_inside_the_range_and_gives_cyclic_overrides(two_probes):
    result = two_probes[0]
    suggestion = result["suggestion"]
    assert 1e-5 <= suggestion["base_lr"] < suggestion["max_lr"] <= 0.05
    assert suggestion["max_lr"] / suggestion["base_lr"] == pytest.approx(6) or suggestion["base_lr"] == 1e-5
    assert result["overrides"][0] == "schedule.name=cyclic"
    dlzoo.load_recipe("digits-lenet5", result["overrides"])  # the overrides are valid settings


def test_steepest_descent_rule_on_a_known_curve():
    """A loss that falls fastest (per factor of lr) at lr 1e-2 and turns up after 1e-1."""
    lrs = np.logspace(-5, 0, 51)
    x = np.log10(lrs)
    loss = 2 - np.tanh(3 * (x + 2)) + np.where(x > -1, 5 * (x + 1) ** 2, 0)
    rows = [{"lr": lr, "smoothed_loss": value} for lr, value in zip(lrs, loss)]
    suggestion = suggest(rows, start=1e-5)
    assert suggestion["max_lr"] == pytest.approx(1e-2)
    assert suggestion["base_lr"] == pytest.approx(1e-2 / 6)
    assert 0.05 < suggestion["min_loss_lr"] < 0.2


def test_a_loss_that_never_falls_says_so():
    rows = [{"lr": 10.0**e, "smoothed_loss": 1.0 + e + 5} for e in range(-5, 1)]
    suggestion = suggest(rows, start=1e-5)
    assert "never fell" in suggestion["rule"] and suggestion["max_lr"] == pytest.approx(1e-5)


def test_stops_early_once_the_loss_blows_up(tmp_path):
    result = dlzoo.lr_find(
        "digits-lenet5",
        QUICK + ["optim.name=sgd"],
        start=1e-3,
        end=1e6,
        steps=40,
        runs_dir=str(tmp_path),
    )
    assert result["steps_run"] < 40 and result["ended"].startswith("stopped at lr")
    rows = read_rows(result["folder"])
    assert rows[-1]["lr"] < 1e6


def test_cli_prints_the_range_and_the_overrides(tmp_path, capsys):
    code = main(
        ["lr-find", "digits-lenet5", "--steps", "10", "--runs-dir", str(tmp_path)] + ["--set", QUICK[0]]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "suggested cyclic range: base_lr" in out
    assert "train with: dlzoo train digits-lenet5 --set schedule.name=cyclic --set schedule.min_lr=" in out
    assert len(list(tmp_path.glob("digits-lenet5/lr-find-*/lr_find.json"))) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--start", "1", "--end", "0.1"], "need 0 < start < end"),
        (["--start", "0"], "need 0 < start < end"),
        (["--steps", "2"], "steps must be >= 5"),
    ],
)
def test_cli_bad_arguments_are_one_line_and_write_nothing(argv, message, tmp_path, capsys):
    code = main(["lr-find", "digits-lenet5", "--runs-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and message in err
    assert not any(tmp_path.iterdir())
