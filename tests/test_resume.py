"""A run killed at any moment and resumed ends bitwise equal to an uninterrupted run.

The kills are real: a child process running ``dlzoo train`` is sent SIGKILL (or SIGINT,
as Ctrl-C) by a small driver that patches one function to fire at a chosen moment —
mid-epoch, half-way through writing a checkpoint file, and after a checkpoint folder is
complete but before ``last`` points at it. The resume then runs without any patch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlzoo.cli import main
from dlzoo.training.resume import RunLock

RECIPE = "digits-lenet5"
SETTINGS = [
    "train.epochs=4",
    "train.threads=1",
    "model.dropout_rate=0.3",  # dropout draws from the global RNG: it must be restored too
    "data.augment.crop_padding=1",  # augmentation draws per batch from (seed, epoch, batch)
    "log.tensorboard=false",
    "log.plots=false",
]
STEPS_PER_EPOCH = 41  # 1,294 training digits in batches of 32

DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    import dlzoo.training.loop as loop
    from dlzoo.tasks.classify import ClassifyTask
    from dlzoo.cli import main

    mode, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    calls = [0]

    def fire(kind=signal.SIGKILL):
        os.kill(os.getpid(), kind)

    if mode in ("step", "interrupt"):
        real_step = ClassifyTask.train_step
        def train_step(self, x, y):
            out = real_step(self, x, y)
            calls[0] += 1
            if calls[0] == at:
                fire(signal.SIGKILL if mode == "step" else signal.SIGINT)
            return out
        ClassifyTask.train_step = train_step
    elif mode == "checkpoint-write":  # the state file is half written when the process dies
        real_save = torch.save
        def save(obj, path, *args, **kwargs):
            calls[0] += 1
            real_save(obj, path, *args, **kwargs)
            if calls[0] == at:
                data = open(path, "rb").read()
                open(path, "wb").write(data[: len(data) // 2])
                fire()
        torch.save = save
    elif mode == "pointer":  # the folder is complete, `last` still names the previous one
        real_pointer = loop.set_pointer
        def set_pointer(folder, tag, name):
            calls[0] += 1
            if calls[0] == at:
                fire()
            real_pointer(folder, tag, name)
        loop.set_pointer = set_pointer
    sys.exit(main(argv))
    """
)


def train_args(runs: Path, *extra: str) -> list[str]:
    args = ["train", RECIPE, "--runs-dir", str(runs), "--quiet"]
    for setting in SETTINGS:
        args += ["--set", setting]
    return args + list(extra)


def run_driver(tmp_path: Path, mode: str, at: int, runs: Path) -> subprocess.CompletedProcess:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, str(driver), mode, str(at), *train_args(runs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def outcome(run: Path) -> tuple[dict[str, torch.Tensor], list[dict], dict]:
    """Final weights, metrics rows (timing dropped) and test metrics of a finished run."""
    last = (run / "checkpoints" / "last").read_text().strip()
    weights = load_file(run / "checkpoints" / last / "model.safetensors")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("samples_per_second")
    return weights, rows, json.loads((run / "run.json").read_text())["test"]


def only_run(runs: Path) -> Path:
    (run,) = (runs / RECIPE).iterdir()
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple:
    runs = tmp_path_factory.mktemp("reference")
    assert main(train_args(runs)) == 0
    return outcome(only_run(runs))


def assert_same(run: Path, reference: tuple) -> None:
    weights, rows, test = outcome(run)
    ref_weights, ref_rows, ref_test = reference
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[k], ref_weights[k]) for k in weights), "final weights differ"
    assert rows == ref_rows
    assert test == ref_test


@pytest.mark.parametrize(
    ("mode", "at"),
    [
        ("step", STEPS_PER_EPOCH + 17),  # in the middle of epoch 2
        ("checkpoint-write", 2),  # while writing epoch 2's state file
        ("pointer", 3),  # epoch 2's folder complete, `last` not yet moved (1 pointer/epoch + 1 for best)
    ],
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(mode, at, tmp_path, reference, capsys):
    runs = tmp_path / "runs"
    killed = run_driver(tmp_path, mode, at, runs)
    assert killed.returncode == -9, killed.stderr
    run = only_run(runs)
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # as a crash leaves it
    assert main(train_args(runs, "--resume", "auto")) == 0
    assert "run folder" in capsys.readouterr().out
    assert_same(run, reference)
    assert not list((run / "checkpoints").glob(".*.tmp")), "leftovers of the interrupted write are cleaned"


def test_ctrl_c_saves_mid_epoch_and_prints_the_resume_command(tmp_path, reference):
    runs = tmp_path / "runs"
    stopped = run_driver(tmp_path, "interrupt", STEPS_PER_EPOCH + 10, runs)
    run = only_run(runs)
    assert stopped.returncode == 130
    assert f"Resume with: dlzoo train {RECIPE} --resume {run}" in stopped.stderr
    assert (run / "checkpoints" / "last").read_text().strip() == "epoch-0001-batch-0010"
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert main(train_args(runs, "--resume", str(run))) == 0
    assert_same(run, reference)


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, capsys):
    runs = tmp_path / "runs"
    killed = run_driver(tmp_path, "step", 3 * STEPS_PER_EPOCH + 5, runs)  # dies in epoch 4
    assert killed.returncode == -9
    run = only_run(runs)
    newest = run / "checkpoints" / "epoch-0003" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    assert main(train_args(runs, "--resume", str(run))) == 0
    assert "using the previous checkpoint" in capsys.readouterr().out
    assert_same(run, reference)


def test_a_changed_config_is_refused_unless_forced(tmp_path, capsys):
    runs = tmp_path / "runs"
    run_driver(tmp_path, "step", STEPS_PER_EPOCH + 3, runs)
    run = only_run(runs)
    assert main(train_args(runs, "--resume", str(run), "--set", "optim.lr=0.5")) == 2
    err = capsys.readouterr().err
    assert "optim.lr 0.005 -> 0.5" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert main(train_args(runs, "--resume", str(run), "--set", "optim.lr=0.5", "--force")) == 0
    assert json.loads((run / "config.json").read_text())["optim"]["lr"] == 0.5


def test_a_second_process_cannot_resume_the_same_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    run_driver(tmp_path, "step", STEPS_PER_EPOCH + 3, runs)
    run = only_run(runs)
    lock = RunLock(run)  # stands in for another process training it
    try:
        assert main(train_args(runs, "--resume", str(run))) == 2
        assert "is in use by another process" in capsys.readouterr().err
    finally:
        lock.release()


def test_resume_auto_with_nothing_to_resume_is_a_clear_error(tmp_path, capsys):
    assert main(train_args(tmp_path, "--resume", "auto")) == 2
    assert "no unfinished run of digits-lenet5" in capsys.readouterr().err


def test_a_full_disk_while_writing_a_checkpoint_loses_nothing(tmp_path, monkeypatch, capsys):
    import errno

    from dlzoo.training import checkpoint

    real_save, calls = checkpoint.save_file, []

    def save_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    assert main(train_args(tmp_path)) == 1
    assert "the disk is full" in capsys.readouterr().err
    run = only_run(tmp_path)
    assert (run / "checkpoints" / "last").read_text().strip() == "epoch-0001"
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    assert main(train_args(tmp_path, "--resume", str(run))) == 0  # and the run goes on from there


def test_retention_keeps_every_nth_epoch_up_to_the_limit(tmp_path):
    args = train_args(tmp_path, "--set", "train.keep_every=1", "--set", "train.keep_limit=2")
    assert main(args) == 0
    folders = sorted(p.name for p in (only_run(tmp_path) / "checkpoints").iterdir() if p.is_dir())
    best = (only_run(tmp_path) / "checkpoints" / "best").read_text().strip()
    assert set(folders) == {"epoch-0003", "epoch-0004", best}


def test_a_foreign_or_truncated_best_checkpoint_is_one_clear_error(tmp_path, capsys):
    assert main(train_args(tmp_path, "--set", "train.epochs=1")) == 0
    capsys.readouterr()
    run = only_run(tmp_path)
    best = run / "checkpoints" / (run / "checkpoints" / "best").read_text().strip()
    (best / "model.safetensors").write_bytes(b"this is not a safetensors file at all")
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is unreadable" in err and len(err.splitlines()) == 1
    torch.save({"step": 0, "something": "else"}, best / "state.pt")  # readable, but not these weights'
    (best / "model.safetensors").write_bytes(b"")
    assert main(["predict", str(run), __file__]) == 2
    assert "unreadable" in capsys.readouterr().err


def test_loading_weights_only_maps_the_training_state(tmp_path, monkeypatch):
    """Testing, eval and predict need a checkpoint's weights, not its optimiser moments (for Adam
    twice the weights' size): load_weights checks the state file but maps it instead of reading
    it; a resume reads it."""
    from dlzoo.models import create_model
    from dlzoo.training import checkpoint

    assert main(train_args(tmp_path, "--set", "train.epochs=1")) == 0
    folder = only_run(tmp_path) / "checkpoints"
    mapped = []
    real_load = torch.load

    def spy(*args, **kwargs):
        mapped.append(kwargs.get("mmap", False))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", spy)
    in_shape = json.loads((only_run(tmp_path) / "run.json").read_text())["data"]["in_shape"]
    model = create_model("lenet5", 10, tuple(in_shape))
    step = checkpoint.load_weights(folder, "last", model)
    weights = load_file(folder / (folder / "last").read_text().strip() / "model.safetensors")
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in weights.items())
    state = checkpoint.load_checkpoint(folder, "last", model)
    assert state["step"] == step > 0 and state["task"]["optimizers"]
    assert mapped == [True, False]  # load_weights maps, the resume path reads
