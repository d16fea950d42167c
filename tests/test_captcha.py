"""Multi-task learning on captchas: the generator draws what its labels say, the shared CNN gives
one row of logits per character, the task's loss and metrics are what they claim, and a tiny
captcha run goes through train, eval, predict, report and exact resume like any other run."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import dlzoo
from dlzoo.cli import main
from dlzoo.data import captcha
from dlzoo.data.captcha import CAPTCHA_CHARACTERS, captcha_split, decode, encode, image_rng, render_captcha
from dlzoo.errors import TrainingInterrupted
from dlzoo.models import create_model
from dlzoo.recipes import load_recipe
from dlzoo.registry import DATASETS
from dlzoo.report.html import write_report
from dlzoo.tasks.multitask import MultiTaskTask, top_sequences

TINY = "_captcha_tiny"
SETTINGS = [
    f"data.name={TINY}",
    "data.batch_size=32",
    "train.epochs=2",
    "train.threads=1",
    "log.progress=false",
]


def test_the_generator_is_deterministic_and_a_split_is_a_prefix_of_a_larger_one():
    split = captcha_split(6, seed=0)
    assert split.x.shape == (6, 1, 32, 96) and split.x.dtype == torch.uint8
    assert split.y.shape == (6, 4) and split.y.dtype == torch.int64
    again, smaller, other = captcha_split(6, seed=0), captcha_split(3, seed=0), captcha_split(6, seed=1)
    assert torch.equal(again.x, split.x) and torch.equal(again.y, split.y)
    assert torch.equal(smaller.x, split.x[:3]) and torch.equal(smaller.y, split.y[:3])
    assert not torch.equal(other.x, split.x)


def test_each_image_shows_the_text_of_its_labels():
    assert encode("AB12") == [10, 11, 1, 2] and decode(torch.tensor([10, 11, 1, 2])) == "AB12"
    split = captcha_split(5, seed=7)
    for k in range(5):  # image k is its labels' text drawn with image k's random choices
        assert torch.equal(split.x[k], render_captcha(decode(split.y[k]), image_rng(7, k)))
    # Character i sits in the i-th quarter: changing the last one changes only the right of the image.
    base, changed = render_captcha("AB12", image_rng(0, 0)), render_captcha("AB1Z", image_rng(0, 0))
    columns = (base != changed).any(dim=1)[0].nonzero()
    assert len(columns) and columns.min() >= 3 * 96 // 4 - 12


@pytest.mark.parametrize("text", ["AB1", "ab12", "AB-1"])
def test_a_bad_captcha_text_is_a_clear_error(text):
    with pytest.raises(ValueError, match="captcha text"):
        render_captcha(text, image_rng(0, 0))


def test_the_model_gives_one_row_of_logits_per_character():
    model = create_model("captcha_cnn", 36, (1, 32, 96))
    assert model(torch.randn(2, 1, 32, 96)).shape == (2, 4, 36)
    model.reset_head(10)  # fine-tuning to another alphabet: 10 classes for each of the 4 heads
    assert model.eval()(torch.randn(2, 1, 32, 96)).shape == (2, 4, 10) and model.num_outputs == 10


def multitask(*overrides: str, in_shape: tuple[int, ...] = (1, 8, 8)) -> MultiTaskTask:
    cfg = load_recipe("captcha-multitask", list(overrides))
    return MultiTaskTask(create_model("captcha_cnn", 36, in_shape), cfg, 36)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_the_loss_is_the_sum_of_the_per_head_cross_entropies(label_smoothing):
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(5, 4, 36, generator=generator)
    y = torch.randint(0, 36, (5, 4), generator=generator)
    per_head = [F.cross_entropy(outputs[:, i], y[:, i], label_smoothing=label_smoothing) for i in range(4)]
    loss = multitask(f"task.label_smoothing={label_smoothing}").compute_loss(outputs, y)
    assert torch.allclose(loss, torch.stack(per_head).sum())


def test_whole_captcha_and_per_character_accuracy_on_a_hand_made_batch():
    y = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    guessed = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 9], [0, 2, 3, 9]])  # all right, one wrong, two wrong
    outputs = F.one_hot(guessed, 36).float()
    metrics = multitask().batch_metrics(outputs, y)
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["char_accuracy"] == pytest.approx(9 / 12)
    assert [metrics[f"head{i}_accuracy"] for i in range(1, 5)] == pytest.approx([2 / 3, 1, 1, 1 / 3])
    assert set(metrics) == set(multitask().metric_names()) - {"loss"}


def test_the_task_refuses_a_single_head_model_and_labels_of_another_shape():
    cfg = load_recipe("captcha-multitask", ["model.name=lenet5"])
    with pytest.raises(ValueError, match="needs a multi-head model; 'lenet5' has one head.*captcha_cnn"):
        MultiTaskTask(create_model("lenet5", 36, (1, 32, 96)), cfg, 36)
    with pytest.raises(ValueError, match=r"labels of shape \(B, 4\).*got \(5,\)"):
        multitask().compute_loss(torch.randn(5, 4, 36), torch.zeros(5, dtype=torch.int64))


def test_top_sequences_are_the_most_probable_texts():
    probabilities = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    every = sorted(
        ((list(labels), probabilities[[0, 1, 2], list(labels)].prod().item())
         for labels in itertools.product(range(4), repeat=3)),
        key=lambda item: item[1], reverse=True,
    )  # fmt: skip
    best = top_sequences(probabilities, 5)
    assert [labels for labels, _ in best] == [labels for labels, _ in every[:5]]
    assert [p for _, p in best] == pytest.approx([p for _, p in every[:5]])


def test_the_shared_trunk_and_four_heads_learn_a_batch():
    torch.manual_seed(0)
    split = captcha_split(8, seed=3)
    task = multitask("schedule.name=constant", "optim.lr=0.003", in_shape=(1, 32, 96))
    task.configure_optimizers(steps_per_epoch=15, total_steps=15)
    x = split.x.float() / 255
    losses = [task.train_step(x, split.y)["loss"] for _ in range(15)]
    assert losses[-1] < 0.1 * losses[0]


def test_the_registered_data_set_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DLZOO_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(captcha, "TRAIN_SIZE", 8)
    monkeypatch.setattr(captcha, "TEST_SIZE", 4)
    bundle = DATASETS.get("captcha")(tmp_path, False)
    assert bundle.classes == list(CAPTCHA_CHARACTERS) and len(bundle.train) == 8 and len(bundle.test) == 4
    assert len(list((tmp_path / "cache").glob("captcha-8-4-*.pt"))) == 1

    def not_again(*args):
        raise AssertionError("drawn again instead of read from the cache")

    monkeypatch.setattr(captcha, "captcha_bundle", not_again)
    cached = DATASETS.get("captcha")(tmp_path, False)
    assert torch.equal(cached.train.x, bundle.train.x) and torch.equal(cached.test.y, bundle.test.y)


@pytest.fixture(scope="module")
def tiny_captchas():
    """A registered set of 120/30 captchas (the first ones of the real set), for quick runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(DATASETS._entries, TINY, lambda root, download: captcha.captcha_bundle(120, 30))
        yield


@pytest.fixture(scope="module")
def captcha_run(tiny_captchas, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return dlzoo.train("captcha-multitask", SETTINGS, runs_dir=str(runs), quiet=True)


def test_a_captcha_run_measures_whole_captcha_and_per_character_accuracy(captcha_run):
    run = captcha_run.run_dir
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["data"]["in_shape"] == [1, 32, 96]
    heads = {f"test_head{i}_accuracy" for i in range(1, 5)}
    assert {"test_loss", "test_accuracy", "test_char_accuracy", *heads} == set(captcha_run.test)
    assert captcha_run.test["test_accuracy"] <= min(captcha_run.test[h] for h in heads)
    assert {"val_accuracy", "val_char_accuracy", "train_head4_accuracy"} <= set(captcha_run.history[-1])
    confusion = json.loads((run / "confusion.json").read_text())
    assert confusion["classes"] == list(CAPTCHA_CHARACTERS)
    assert sum(map(sum, confusion["matrix"])) == 4 * 30  # every head's prediction of every test captcha
    assert (run / "curves.png").is_file()
    report = write_report([run], wrong_examples=4)
    assert "Confusion matrix" in report.read_text()


def test_eval_and_predict_read_captchas(captcha_run, tmp_path, capsys):
    metrics = dlzoo.evaluate(captcha_run.run_dir)
    assert metrics["accuracy"] == pytest.approx(captcha_run.test["test_accuracy"])
    assert metrics["char_accuracy"] == pytest.approx(captcha_run.test["test_char_accuracy"])
    assert metrics["examples"] == 30 and list(metrics["per_class_accuracy"]) == list(CAPTCHA_CHARACTERS)
    assert sum(map(sum, metrics["confusion_matrix"])) == 4 * 30
    image = tmp_path / "captcha.png"
    Image.fromarray(render_captcha("AB12", image_rng(5, 0))[0].numpy()).save(image)
    (result,) = dlzoo.predict(captcha_run.run_dir, [image], top_k=3)
    texts = [t["class"] for t in result["top"]]
    probabilities = [t["probability"] for t in result["top"]]
    assert len(set(texts)) == 3 and all(len(t) == 4 and set(t) <= set(CAPTCHA_CHARACTERS) for t in texts)
    assert probabilities == sorted(probabilities, reverse=True)
    assert main(["predict", str(captcha_run.run_dir), str(image), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"{image}: {texts[0]} {probabilities[0]:.3f}"
    assert main(["eval", str(captcha_run.run_dir)]) == 0
    assert f"test accuracy {metrics['accuracy']:.4f}" in capsys.readouterr().out


def test_a_resumed_captcha_run_equals_the_uninterrupted_one(captcha_run, tmp_path):
    def stop_after_first_epoch(row):
        raise KeyboardInterrupt  # as Ctrl-C at the end of epoch 1

    with pytest.raises(TrainingInterrupted):
        dlzoo.train(
            "captcha-multitask",
            SETTINGS,
            runs_dir=str(tmp_path),
            quiet=True,
            on_epoch_end=stop_after_first_epoch,
        )
    (run,) = (tmp_path / "captcha-multitask").iterdir()
    resumed = dlzoo.train("captcha-multitask", SETTINGS, runs_dir=str(tmp_path), resume=run, quiet=True)
    assert resumed.test == captcha_run.test

    def last_weights(run_dir):
        return load_file(run_dir / "checkpoints" / (run_dir / "checkpoints" / "last").read_text().strip()
                         / "model.safetensors")  # fmt: skip

    weights, reference = last_weights(resumed.run_dir), last_weights(captcha_run.run_dir)
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in weights)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in captcha_run.history]
