"""The loop end to end on the bundled digits: the loss falls, the run folder holds what
it promises, and a bad run stops with a clear error and nothing half-written."""

import contextlib
import json
import re
import subprocess
import sys

import pytest
import torch

import dlzoo
from dlzoo.cli import main
from dlzoo.errors import TrainingError
from dlzoo.recipes import load_recipe

QUICK = ["train.epochs=4", "train.threads=1", "log.progress=false"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return dlzoo.train("digits-lenet5", QUICK, runs_dir=str(runs), quiet=True)


def test_loss_falls_and_accuracy_rises(digits_run):
    history = digits_run.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert digits_run.test["test_accuracy"] > 0.85


def test_run_folder_holds_everything(digits_run):
    run = digits_run.run_dir
    for name in (
        "config.json",
        "run.json",
        "metrics.jsonl",
        "metrics.csv",
        "curves.png",
        "confusion.json",
        "checkpoints/last",
        "checkpoints/best",
    ):
        assert (run / name).is_file(), name
    last = (run / "checkpoints" / "last").read_text().strip()
    assert last == "epoch-0004"
    assert (run / "checkpoints" / last / "model.safetensors").is_file()
    assert (run / "checkpoints" / last / "state.pt").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["seed"] == 0 and info["dlzoo_version"] == dlzoo.__version__
    assert info["git_revision"] and info["machine"]["torch"] == torch.__version__
    assert info["test"] == digits_run.test
    assert 50 < info["peak_rss_mib"] < 24 * 1024, "peak resident memory in MiB"
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4 and (run / "metrics.csv").read_text().count("\n") == 5
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard event files"
    confusion = json.loads((run / "confusion.json").read_text())["matrix"]
    assert sum(map(sum, confusion)) == info["data"]["test"] > 300


def test_tensorboard_has_the_promised_series(digits_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for folder in {p.parent for p in (digits_run.run_dir / "tensorboard").rglob("events.out.tfevents.*")}:
        events = EventAccumulator(str(folder), size_guidance={"histograms": 0, "images": 0}).Reload().Tags()
        for kind in ("scalars", "histograms", "images"):
            tags.update(events[kind])
        if events["graph"]:
            tags.add("graph")
        tags.update(
            f"hparams:{k}" for k in EventAccumulator(str(folder)).Reload().PluginTagToContent("hparams")
        )
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "inputs", "graph"} <= tags
    assert {"hparams:_hparams_/experiment", "hparams:_hparams_/session_end_info"} <= tags
    assert any(t.startswith("weights/") for t in tags) and any(t.startswith("gradients/") for t in tags)


def test_histograms_count_every_value_in_equal_buckets_and_skip_what_cannot_be_drawn(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlzoo.training.callbacks import HISTOGRAM_BINS, TensorBoardLogger

    logger = TensorBoardLogger(tmp_path, histograms=True)
    values = torch.cat([torch.arange(300.0), torch.full((100,), 299.0)])  # 0..299, then 100 more at the top
    logger.histogram("spread", values, 1)
    logger.histogram("constant", torch.ones(7, 3), 1)  # airbench's fixed batch-norm scales
    logger.histogram("diverged", torch.tensor([1.0, float("nan")]), 1)
    logger.writer.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0}).Reload()
    assert set(events.Tags()["histograms"]) == {"spread", "constant"}
    (spread,) = events.Histograms("spread")
    hist = spread.histogram_value
    assert (hist.min, hist.max, hist.num) == (0.0, 299.0, 400)
    assert hist.sum == pytest.approx(values.sum().item()) and hist.sum_squares == pytest.approx(
        values.square().sum().item()
    )
    assert len(hist.bucket) == HISTOGRAM_BINS and hist.bucket_limit[-1] == pytest.approx(299.0)
    assert list(hist.bucket) == [10.0] * (HISTOGRAM_BINS - 1) + [110.0]  # 10 values a bucket, the top one 110
    (constant,) = events.Histograms("constant")
    assert (list(constant.histogram_value.bucket), constant.histogram_value.min) == ([21.0], 1.0)


def test_gradients_are_freed_after_each_step_but_the_epochs_last_which_its_histograms_show(
    tmp_path, monkeypatch
):
    from dlzoo.tasks.base import Task

    held = []  # per step: did the previous step's gradients live on into this one?
    train_step = Task.train_step

    def recording_step(self, x, y):
        held.append(any(p.grad is not None for p in self.model.parameters()))
        return train_step(self, x, y)

    monkeypatch.setattr(Task, "train_step", recording_step)
    dlzoo.train(
        "digits-lenet5",
        ["train.epochs=2", "train.threads=1", "log.progress=false"],
        runs_dir=str(tmp_path),
        quiet=True,
    )
    steps = len(held) // 2
    assert steps > 2 and held == [False] * steps + [True] + [False] * (steps - 1)


def test_same_seed_same_result(digits_run, tmp_path):
    again = dlzoo.train("digits-lenet5", QUICK, runs_dir=str(tmp_path), quiet=True)
    assert again.test == digits_run.test
    assert [r["train_loss"] for r in again.history] == [r["train_loss"] for r in digits_run.history]


def test_eval_and_predict_rebuild_the_model_from_the_run_folder(digits_run, tmp_path):
    metrics = dlzoo.evaluate(digits_run.run_dir)
    assert metrics["accuracy"] == pytest.approx(digits_run.test["test_accuracy"])
    assert len(metrics["per_class_accuracy"]) == 10
    from PIL import Image

    from dlzoo.data.pipeline import load_data

    cfg = load_recipe("digits-lenet5")
    bundle = load_data(cfg.data)
    image = bundle.test.x[0, 0].numpy()
    path = tmp_path / "digit.png"
    Image.fromarray(image).resize((64, 64)).convert("RGB").save(path)  # any size, any colour
    (result,) = dlzoo.predict(digits_run.run_dir, [path], top_k=10)
    assert sorted(t["class"] for t in result["top"]) == [str(d) for d in range(10)]
    assert sum(t["probability"] for t in result["top"]) == pytest.approx(1, abs=1e-3)
    probabilities = [t["probability"] for t in result["top"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_a_resized_run_is_evaluated_predicted_and_reported_at_the_size_it_trained_on(tmp_path):
    """data.resize happens batch by batch in the loaders; everything that reads the run back
    (run.json, evaluate, predict, the report's examples) still sees the resized images."""
    from PIL import Image

    from dlzoo.data.pipeline import eval_loader, load_data
    from dlzoo.report.html import confident_mistakes, load_test_split

    overrides = ["data.resize=16", "train.epochs=1", "train.threads=1", "log.progress=false"]
    result = dlzoo.train("digits-lenet5", overrides, runs_dir=str(tmp_path), quiet=True)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["data"]["in_shape"] == [1, 16, 16]
    assert dlzoo.evaluate(result.run_dir)["accuracy"] == pytest.approx(result.test["test_accuracy"])

    run = dlzoo.load_run(result.run_dir)
    test = load_data(run.cfg.data).test  # 8x8, as stored
    x, _ = next(iter(eval_loader(run.cfg.data, test, run.normalizer)))
    with torch.no_grad():
        expected = torch.softmax(run.model(x[:1]).float(), dim=1)[0]
    path = tmp_path / "digit.png"
    Image.fromarray(test.x[0, 0].numpy()).save(path)  # 8x8: predict resizes it as the loader does
    (predicted,) = dlzoo.predict(result.run_dir, [path], top_k=1)
    (top,) = predicted["top"]
    assert top["class"] == run.classes[int(expected.argmax())]
    assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-4)

    mistakes, wrong = confident_mistakes(run, load_test_split(run.cfg), 2)
    assert wrong > 0 and all(mistake.image.shape == (1, 16, 16) for mistake in mistakes)


def test_progressive_sizes_train_the_first_epochs_on_smaller_images(tmp_path):
    """data.progressive_sizes=[16, 20] on digits resized to 24x24: the network trains on 16x16
    images in epoch 1, 20x20 in epoch 2 and 24x24 in epoch 3, and is tested at 24x24."""
    from dlzoo.models.airbench import Airbench

    seen: dict[bool, set[tuple[int, int]]] = {True: set(), False: set()}  # training? -> (step, size)
    steps = [0]

    def record(module, inputs, outputs):
        if isinstance(module, Airbench):
            steps[0] += module.training
            seen[module.training].add((steps[0], inputs[0].shape[-1]))

    overrides = [
        "model.name=airbench",
        "model.width_mult=0.25",
        "data.resize=24",
        "data.progressive_sizes=16,20",
        "data.batch_size=256",
        "train.epochs=3",
        *QUICK[1:],
        "log.tensorboard=false",
    ]
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = dlzoo.train("digits-lenet5", overrides, runs_dir=str(tmp_path), quiet=True)
    finally:
        hook.remove()
    per_epoch = result.history[0]["step"]  # steps in an epoch
    trained = sorted(seen[True])
    assert [size for _, size in trained] == [16] * per_epoch + [20] * per_epoch + [24] * per_epoch
    assert {size for step, size in seen[False] if step} == {24}  # validation and test, after step 0
    assert {size for step, size in seen[False] if not step} == {16, 20}  # the size check's passes
    assert json.loads((result.run_dir / "run.json").read_text())["data"]["in_shape"] == [1, 24, 24]


def test_early_stopping_stops(tmp_path):
    result = dlzoo.train(
        "digits-lenet5",
        [
            "train.epochs=30",
            "train.early_stopping_patience=1",
            "optim.lr=1e-7",
            "train.monitor=val_loss",
            "train.monitor_mode=min",
            "log.tensorboard=false",
        ],
        runs_dir=str(tmp_path),
        quiet=True,
    )
    assert result.stopped_early or len(result.history) == 30
    assert len(result.history) < 30


def test_max_steps_bounds_training(tmp_path):
    result = dlzoo.train(
        "digits-lenet5", ["train.max_steps=7", "log.tensorboard=false"], runs_dir=str(tmp_path), quiet=True
    )
    assert result.history[-1]["step"] == 7 and len(result.history) == 1


def test_the_test_split_is_run_through_the_model_once_for_metrics_and_confusion_matrix(tmp_path):
    from dlzoo.models.lenet import LeNet5

    evaluated = []  # examples each eval-mode forward pass of the whole model took

    def count(module, inputs, outputs):
        if isinstance(module, LeNet5) and not module.training:
            evaluated.append(len(inputs[0]))

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        overrides = ["train.max_steps=3", "log.tensorboard=false", *QUICK[1:]]  # no graph trace
        result = dlzoo.train("digits-lenet5", overrides, runs_dir=str(tmp_path), quiet=True)
        sizes = json.loads((result.run_dir / "run.json").read_text())["data"]
        assert sum(evaluated) == sizes["val"] + sizes["test"], "one validation pass, one test pass"
        evaluated.clear()
        metrics = dlzoo.evaluate(result.run_dir, checkpoint="last")
        assert sum(evaluated) == sizes["test"]
    finally:
        hook.remove()
    confusion = json.loads((result.run_dir / "confusion.json").read_text())["matrix"]
    correct = sum(row[i] for i, row in enumerate(confusion))
    assert correct / sizes["test"] == pytest.approx(result.test["test_accuracy"])
    assert metrics["confusion_matrix"] == confusion and metrics["accuracy"] == result.test["test_accuracy"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from dlzoo.tasks.classify import ClassifyTask

    real_loss, calls = ClassifyTask.compute_loss, []

    def loss_that_explodes_in_epoch_two(self, outputs, y):
        calls.append(self.model.training)
        loss = real_loss(self, outputs, y)
        return loss * float("nan") if sum(calls) > 4 else loss  # the 5th training step: epoch 2

    monkeypatch.setattr(ClassifyTask, "compute_loss", loss_that_explodes_in_epoch_two)
    with pytest.raises(
        TrainingError, match=r"in epoch 2: the training loss became nan at step 5;.*last good checkpoint"
    ):
        dlzoo.train(
            "iris-softmax", ["train.epochs=5", "log.tensorboard=false"], runs_dir=str(tmp_path), quiet=True
        )
    (run,) = (tmp_path / "iris-softmax").iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    from safetensors.torch import load_file

    last = (run / "checkpoints" / "last").read_text().strip()
    assert last == "epoch-0001"
    weights = load_file(run / "checkpoints" / last / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not list(run.rglob("*.tmp")), "no half-written files"


def test_cli_train_prints_accuracy_and_run_folder(tmp_path, capsys):
    code = main(["train", "iris-softmax", "--epochs", "5", "--quiet", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "test accuracy" in out and f"run folder: {tmp_path}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "mnist-lenet"], "unknown recipe 'mnist-lenet'. Did you mean 'mnist-lenet5'?"),
        (["train", "digits-lenet5", "--set", "optim.lr=abc"], "optim.lr=abc: must be a number"),
        (["train", "digits-lenet5", "--set", "model.name=lenet"], "unknown model 'lenet'"),
        (
            [
                "train",
                "digits-lenet5",
                "--set",
                "data.name=mnist",
                "--data-dir",
                "{tmp}/nowhere",
                "--set",
                "data.download=false",
            ],
            "train-images-idx3-ubyte",
        ),
        (["train", "digits-lenet5", "--set", "data.classes=42"], "data.classes"),
        (
            ["train", "digits-lenet5", "--set", "data.progressive_sizes=6"],
            "data.progressive_sizes: model 'lenet5' cannot take 6x6 images",
        ),
        (
            [
                "train",
                "digits-lenet5",
                "--set",
                "model.name=airbench",
                "--set",
                "data.resize=24",
                "--set",
                "data.progressive_sizes=12",
            ],
            "got 12x12; use data.progressive_sizes of 16 or more",
        ),
        (["eval", "{tmp}"], "not a dlzoo run folder"),
    ],
)
def test_cli_bad_input_is_one_clear_line_and_writes_nothing(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--runs-dir", str(tmp_path / "runs")] * (
        argv[0] == "train"
    )
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("run.json"))


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("list", "train", "eval", "predict", "data"):
        assert command in out


def test_list_prints_matching_recipes(capsys):
    assert main(["list", "mnist-*"]) == 0
    out = capsys.readouterr().out
    assert "mnist-lenet5" in out and "mnist-mlp" in out and "cifar10" not in out


def test_regression_task_fits_a_linear_function(tmp_path, monkeypatch):
    """The regress task through the same loop: y = 2*x0 - 3*x1 + 1 + noise."""
    from dlzoo.config import RunConfig
    from dlzoo.data.core import DataBundle, Split
    from dlzoo.registry import DATASETS

    def line(root, download):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(600, 2, generator=generator)
        y = (2 * x[:, 0] - 3 * x[:, 1] + 1 + 0.01 * torch.randn(600, generator=generator))[:, None]
        return DataBundle(Split(x[:500], y[:500]), Split(x[500:], y[500:]), classes=["y"], source="a line")

    monkeypatch.setitem(DATASETS._entries, "line", line)
    cfg = RunConfig.from_dict(
        {
            "data": {"name": "line", "batch_size": 50},
            "model": {"name": "linear"},
            "task": {"name": "regress"},
            "optim": {"name": "sgd", "lr": 0.1},
            "train": {"epochs": 20, "monitor": "val_loss", "monitor_mode": "min"},
            "log": {"runs_dir": str(tmp_path), "tensorboard": False},
        },
        "line-regression",
    )
    result = dlzoo.train(cfg, quiet=True)
    assert result.test["test_loss"] < 1e-3 and result.test["test_mae"] < 0.03
    assert not (result.run_dir / "confusion.json").exists()


def test_bf16_autocast_and_channels_last_switch_on(tmp_path):
    result = dlzoo.train(
        "digits-lenet5",
        [
            "train.bf16=on",
            "train.channels_last=on",
            "train.max_steps=30",
            "log.tensorboard=false",
            "train.threads=1",
        ],
        runs_dir=str(tmp_path),
        quiet=True,
    )
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["precision"] == {"bf16_autocast": True, "channels_last": True}
    assert (
        result.history[-1]["train_loss"] < result.history[0]["train_loss"]
        or result.test["test_accuracy"] > 0.3
    )
    # autocast speeds up training only: the run measured its test split in float32, as eval does
    evaluated = dlzoo.evaluate(result.run_dir)
    assert evaluated["accuracy"] == result.test["test_accuracy"]
    assert evaluated["loss"] == pytest.approx(result.test["test_loss"], rel=1e-6)


def test_gradient_clipping_bounds_the_update(tmp_path):
    from dlzoo.models import create_model
    from dlzoo.tasks.classify import ClassifyTask

    cfg = load_recipe("digits-lenet5", ["optim.name=sgd", "optim.lr=1.0", "optim.grad_clip=0.01"])
    model = create_model("softmax", 10, (1, 8, 8))
    task = ClassifyTask(model, cfg, 10)
    task.configure_optimizers(steps_per_epoch=1, total_steps=1)
    before = [p.detach().clone() for p in model.parameters()]
    task.train_step(torch.randn(16, 1, 8, 8) * 100, torch.randint(0, 10, (16,)))
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert moved <= 0.01 + 1e-6  # lr 1 x clipped gradient norm 0.01
    assert moved > 0.005


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_memory_is_the_runs_own_not_the_process_that_started_it():
    # a parent holding 2.5 GiB starts a child that reports its peak; getrusage's ru_maxrss
    # would give the child at least the parent's 2.5 GiB (Linux keeps it across the exec)
    parent = (
        "import subprocess, sys\n"
        "held = b'x' * (2560 << 20)\n"
        "child = 'from dlzoo.training.run import peak_rss_mib; print(peak_rss_mib())'\n"
        "done = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, check=True)\n"
        "print(done.stdout)\n"
    )
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    assert 10 < float(done.stdout) < 2048, "the child's own peak (importing torch: about 700 MiB)"


def one_step(micro_batches: int, x: torch.Tensor, y: torch.Tensor, wrap=None):
    """The mlp's weights and step metrics after one SGD step on (x, y) in ``micro_batches`` chunks."""
    from dlzoo.models import create_model
    from dlzoo.tasks.classify import ClassifyTask

    overrides = ["optim.name=sgd", "optim.lr=0.5", f"train.micro_batches={micro_batches}"]
    cfg = load_recipe("digits-lenet5", overrides)
    torch.manual_seed(0)
    model = create_model("mlp", 10, (1, 8, 8))
    task = ClassifyTask(model, cfg, 10)
    if wrap is not None:
        task.step_model = wrap(model)
    task.configure_optimizers(steps_per_epoch=1, total_steps=1)
    metrics = task.train_step(x, y)
    return [p.detach().clone() for p in model.parameters()], {k: float(v) for k, v in metrics.items()}


def test_micro_batches_make_the_whole_batch_step_one_chunk_at_a_time():
    torch.manual_seed(1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    whole, whole_metrics = one_step(1, x, y)
    events = []

    class Recorded(torch.nn.Module):  # logs each forward's batch and each backward pass
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, inputs):
            events.append(f"forward {len(inputs)}")
            outputs = self.model(inputs)
            outputs.register_hook(lambda grad: events.append("backward"))
            return outputs

    chunked, chunked_metrics = one_step(3, x, y, wrap=Recorded)
    # 16 examples in chunks of 6, 5, 5, each one's backward done before the next forward: only
    # one chunk's activations are alive at a time
    assert events == ["forward 6", "backward", "forward 5", "backward", "forward 5", "backward"]
    # each chunk weighted by its share: the same update and metrics as the whole batch (equal
    # weights of 1/3 would give other gradients for chunks of 6, 5, 5)
    for after, expected in zip(chunked, whole):
        torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)
    assert chunked_metrics == pytest.approx(whole_metrics, rel=1e-5)


def test_micro_batches_average_data_parallel_gradients_once_in_the_last_chunk():
    held_back = []

    class FakeDataParallel(torch.nn.Module):  # DDP's no_sync: skip the all-reduce of a backward
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.syncing = True

        def forward(self, inputs):
            outputs = self.model(inputs)
            held_back.append(not self.syncing)
            return outputs

        @contextlib.contextmanager
        def no_sync(self):
            self.syncing = False
            try:
                yield
            finally:
                self.syncing = True

    torch.manual_seed(1)
    x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 10, (12,))
    one_step(4, x, y, wrap=FakeDataParallel)
    assert held_back == [True, True, True, False]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.micro_batches=0"], "train.micro_batches must be >= 1"),
        (["data.batch_size=4", "train.micro_batches=8"], "must be at most data.batch_size (4)"),
    ],
)
def test_bad_micro_batches_are_errors(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_recipe("digits-lenet5", overrides)


def test_an_epoch_callback_sees_each_row_and_can_stop_the_run(tmp_path):
    from dlzoo.errors import StopRun

    seen = []

    def stop_after_two(row):
        seen.append(row["epoch"])
        if row["epoch"] == 2:
            raise StopRun("pruned")

    with pytest.raises(StopRun):
        dlzoo.train(
            "iris-softmax",
            ["train.epochs=10", "log.tensorboard=false"],
            runs_dir=str(tmp_path),
            quiet=True,
            on_epoch_end=stop_after_two,
        )
    assert seen == [1, 2]
    (run,) = (tmp_path / "iris-softmax").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and info["epochs_run"] == 2 and "test" not in info


def test_compile_trains_the_same_model_through_torch_compile(tmp_path, monkeypatch):
    compiled = []
    real_compile = torch.compile

    def spy(module, *args, **kwargs):
        compiled.append(module)
        return real_compile(module, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    settings = ["train.epochs=2", "train.threads=1", "log.tensorboard=false", "log.plots=false"]
    eager = dlzoo.train("digits-lenet5", settings, runs_dir=str(tmp_path / "eager"), quiet=True)
    assert not compiled
    fast = dlzoo.train(
        "digits-lenet5", [*settings, "train.compile=true"], runs_dir=str(tmp_path / "c"), quiet=True
    )
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)
    # the same steps with fused kernels: the same curve to float tolerance, the same test result
    for before, after in zip(eager.history, fast.history):
        assert after["train_loss"] == pytest.approx(before["train_loss"], rel=1e-3)
    assert abs(fast.test["test_accuracy"] - eager.test["test_accuracy"]) <= 2 / 359


@pytest.mark.parametrize("sync_every", [1, 4])
def test_the_host_reads_the_step_metrics_only_every_sync_every_steps(tmp_path, monkeypatch, sync_every):
    """On a GPU a read of a device tensor (item, tolist, float, bool) waits for its queue; the
    training loop reads the step metrics once per train.sync_every steps, never per step."""
    import dlzoo.training.loop as loop

    counting, reads, steps = [False], [0], [0]
    for method in ("item", "tolist", "__float__", "__bool__", "__int__", "numpy"):
        real = getattr(torch.Tensor, method)

        def counted(self, *args, real=real, **kwargs):
            reads[0] += counting[0]
            return real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    real_epoch, real_step = loop.train_one_epoch, loop.Task.train_step

    def epoch(*args, **kwargs):
        counting[0] = True
        try:
            return real_epoch(*args, **kwargs)
        finally:
            counting[0] = False

    def step(self, x, y):
        steps[0] += 1
        return real_step(self, x, y)

    monkeypatch.setattr(loop, "train_one_epoch", epoch)
    monkeypatch.setattr(loop.Task, "train_step", step)
    dlzoo.train(
        "digits-lenet5",
        ["train.epochs=1", f"train.sync_every={sync_every}", "optim.name=sgd", "schedule.name=constant",
         "log.tensorboard=false"],
        runs_dir=str(tmp_path), quiet=True,
    )  # fmt: skip
    assert steps[0] > 8
    assert reads[0] == -(-steps[0] // sync_every)  # one read per sync_every steps, one for the rest


def test_bf16_autocast_leaves_the_accuracy_unchanged(tmp_path):
    """Same recipe, seed and data in float32 and under bfloat16 autocast: the test accuracies
    agree within 2.5 points (9 of the 359 test digits)."""
    accuracy = {}
    for bf16 in ("off", "on"):
        result = dlzoo.train(
            "digits-lenet5",
            [f"train.bf16={bf16}", "train.epochs=10", "train.threads=1", "log.tensorboard=false"],
            runs_dir=str(tmp_path / bf16),
            quiet=True,
        )
        assert json.loads((result.run_dir / "run.json").read_text())["precision"]["bf16_autocast"] == (
            bf16 == "on"
        )
        accuracy[bf16] = result.test["test_accuracy"]
    assert accuracy["off"] > 0.9
    assert abs(accuracy["on"] - accuracy["off"]) <= 0.025
