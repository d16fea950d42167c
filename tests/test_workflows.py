"""Whole user workflows through the command line: import your own images and train on
them, the Fashion-MNIST code path on files in the official format, a real-data smoke
run, and the bad inputs of each (one ``error:`` line, exit 2, nothing written)."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dlzoo.cli import main
from dlzoo.data.core import DataBundle, Split
from dlzoo.registry import DATASETS
from tests.test_sources import write_mnist

FAST = ["--set", "train.threads=1", "--quiet"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def draw_shapes(folder, per_class=12):
    """A tiny image-folder data set: bright squares vs dark circles, sizes and modes mixed."""
    rng = np.random.default_rng(0)
    for label in ("square", "circle"):
        (folder / label).mkdir(parents=True)
        for i in range(per_class):
            side = int(rng.integers(20, 40))
            image = Image.new("RGB" if i % 2 else "L", (side, side))
            box = [side // 4, side // 4, 3 * side // 4, 3 * side // 4]
            painter = ImageDraw.Draw(image)
            (painter.rectangle if label == "square" else painter.ellipse)(box, fill="white")
            image.save(folder / label / f"{i}.png")
    return folder


def test_import_then_train_on_your_own_images(tmp_path, capsys):
    source = draw_shapes(tmp_path / "shapes")
    data_dir = str(tmp_path / "data")
    assert (
        main(["data", "import", str(source), "--name", "shapes", "--size", "16", "--data-dir", data_dir]) == 0
    )
    assert "data.name=imported:shapes" in capsys.readouterr().out
    assert main(["data", "list", "--data-dir", data_dir]) == 0
    assert "imported:shapes" in capsys.readouterr().out
    code = main(
        [
            "train",
            "digits-lenet5",
            "--set",
            "data.name=imported:shapes",
            "--set",
            "data.val_fraction=0.2",
            "--epochs",
            "3",
            "--data-dir",
            data_dir,
            "--runs-dir",
            str(tmp_path / "runs"),
            *FAST,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "test accuracy" in out
    (run,) = (tmp_path / "runs" / "digits-lenet5").iterdir()
    assert json.loads((run / "run.json").read_text())["data"]["in_shape"] == [3, 16, 16]


def test_import_bad_inputs(tmp_path, capsys):
    source = draw_shapes(tmp_path / "shapes", per_class=3)
    (source / "square" / "notes.png").write_text("this is not a picture")
    data_dir = tmp_path / "data"
    assert (
        main(["data", "import", str(source), "--name", "shapes", "--size", "8", "--data-dir", str(data_dir)])
        == 2
    )
    assert "notes.png is not a readable image" in error_line(capsys)
    assert not (data_dir / "imported" / "shapes.pt").exists()
    assert (
        main(["data", "import", str(tmp_path / "nowhere"), "--name", "x", "--data-dir", str(data_dir)]) == 2
    )
    assert "nowhere" in error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["data", "import", str(tmp_path / "empty"), "--name", "x", "--data-dir", str(data_dir)]) == 2
    assert "no images" in error_line(capsys)
    assert (
        main(["train", "digits-lenet5", "--set", "data.name=imported:nothing", "--data-dir", str(data_dir)])
        == 2
    )
    assert "nothing" in error_line(capsys)


def test_predict_with_a_file_that_is_not_an_image(tmp_path, capsys):
    assert main(["train", "digits-lenet5", "--epochs", "1", "--runs-dir", str(tmp_path), *FAST]) == 0
    run = capsys.readouterr().out.split("run folder: ")[1].strip()
    bogus = tmp_path / "digit.png"
    bogus.write_text("not an image")
    assert main(["predict", run, str(bogus)]) == 2
    assert "digit.png is not a readable image" in error_line(capsys)
    assert main(["predict", run, str(tmp_path / "missing.png")]) == 2
    assert "no such image file" in error_line(capsys)
    good = tmp_path / "seven.png"
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), "white").save(buffer, format="PNG")
    good.write_bytes(buffer.getvalue())
    assert main(["predict", run, str(good), "--invert", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["file"] == str(good) and len(result["top"]) == 3


def test_eval_prints_per_class_accuracy_and_confusion_matrix(tmp_path, capsys):
    assert main(["train", "iris-softmax", "--epochs", "20", "--runs-dir", str(tmp_path), *FAST]) == 0
    run = capsys.readouterr().out.split("run folder: ")[1].strip()
    assert main(["eval", run, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert sorted(metrics["per_class_accuracy"]) == ["setosa", "versicolor", "virginica"]
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["examples"] == 30
    assert main(["eval", run, "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("val accuracy") and "true \\ predicted" in out


def test_fashion_mnist_code_path_on_files_in_the_official_format(tmp_path, capsys):
    write_mnist(tmp_path / "fashion-mnist", gz=True)
    code = main(
        [
            "train",
            "fashion-mnist-mlp",
            "--epochs",
            "1",
            "--data-dir",
            str(tmp_path),
            "--set",
            "data.val_fraction=0",
            "--set",
            "train.test_checkpoint=last",
            "--set",
            "train.monitor=train_loss",
            "--set",
            "train.monitor_mode=min",
            "--runs-dir",
            str(tmp_path / "runs"),
            *FAST,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "test accuracy" in out
    run = Path(out.split("run folder: ")[1].strip())
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["classes"][0] == "T-shirt/top" and "Fashion-MNIST" in info["data"]["source"]


def test_monitoring_validation_without_a_validation_split_is_refused_before_writing(tmp_path, capsys):
    code = main(["train", "iris-softmax", "--set", "data.val_fraction=0", "--runs-dir", str(tmp_path), *FAST])
    assert code == 2 and "leaves no validation split" in error_line(capsys)
    assert not list(tmp_path.rglob("run.json"))


def test_an_empty_data_set_is_a_clear_error(tmp_path, capsys, monkeypatch):
    def empty(root, download):
        nothing = Split(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
        return DataBundle(train=nothing, test=nothing, classes=["a", "b"], source="nothing")

    monkeypatch.setitem(DATASETS._entries, "empty", empty)
    code = main(["train", "digits-lenet5", "--set", "data.name=empty", "--runs-dir", str(tmp_path), *FAST])
    assert code == 2 and "empty training split" in error_line(capsys)
    assert not list(tmp_path.rglob("run.json"))


@pytest.mark.slow
def test_real_mnist_smoke(shared_data, tmp_path, capsys):
    code = main(
        [
            "train",
            "mnist-lenet5",
            "--data-dir",
            str(shared_data),
            "--set",
            "train.max_steps=200",
            "--runs-dir",
            str(tmp_path),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(out.split("test accuracy ")[1].split(",")[0])
    assert accuracy > 0.9, out


def test_predict_takes_folders_globs_and_cleans_up_photos(tmp_path, capsys):
    assert main(["train", "digits-lenet5", "--epochs", "1", "--runs-dir", str(tmp_path), *FAST]) == 0
    run = capsys.readouterr().out.split("run folder: ")[1].strip()
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.jpg"):
        image = Image.new("RGB", (60, 80), "white")
        ImageDraw.Draw(image).line([(30, 10), (30, 70)], fill="black", width=8)  # a dark "1" on paper
        image.save(photos / name)
    (photos / "notes.txt").write_text("not an image, and not picked up from the folder")
    assert main(["predict", run, str(photos), "--json"]) == 0
    assert [Path(r["file"]).name for r in json.loads(capsys.readouterr().out)] == ["a.png", "b.jpg"]
    assert main(["predict", run, str(photos / "*.jpg"), "--json"]) == 0
    assert [Path(r["file"]).name for r in json.loads(capsys.readouterr().out)] == ["b.jpg"]
    assert main(["predict", run, str(photos / "*.gif")]) == 2
    assert "no file matches" in error_line(capsys)

    from dlzoo.api import load_image

    cleaned = load_image(photos / "a.png", (1, 8, 8), invert=True, threshold=128)
    assert set(cleaned.unique().tolist()) <= {0, 255} and cleaned.max() == 255 and cleaned.min() == 0
    assert cleaned[0, :, 3:5].float().mean() > cleaned[0, :, :2].float().mean()  # the stroke is bright
