"""Importing your own images: every layout, every promised error, nothing written on failure."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from dlzoo.data.importer import import_images, load_imported


def png(
    color: tuple[int, int, int], size: tuple[int, int] = (6, 6), mode: str = "RGB", fmt: str = "PNG"
) -> bytes:
    """A flat-coloured image of ``size`` (width, height), encoded as ``fmt``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


RED, GREEN, BLUE = (250, 0, 0), (0, 250, 0), (0, 0, 250)


def write_tree(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def class_files(counts: dict[str, int], under: str = "", **image) -> dict[str, bytes]:
    colors = {"cat": RED, "dog": GREEN, "fox": BLUE}
    return {
        f"{under}{name}/{number}.png": png(colors[name], **image)
        for name, count in counts.items()
        for number in range(count)
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "dlzoo-data"


def written(data_dir: Path) -> list[str]:
    """Every file under data_dir/imported, temporary ones included."""
    folder = data_dir / "imported"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_train_test_folders_are_kept(tmp_path: Path, data_dir: Path) -> None:
    files = class_files({"cat": 3, "dog": 2}, "train/") | class_files({"cat": 1, "dog": 1, "fox": 1}, "test/")
    path = import_images(write_tree(tmp_path / "pets", files), "pets", data_dir)
    assert path == data_dir / "imported" / "pets.pt" and written(data_dir) == ["pets.pt"]
    bundle = load_imported("pets", data_dir)
    assert bundle.classes == ["cat", "dog", "fox"]
    assert bundle.train.y.tolist() == [0, 0, 0, 1, 1] and bundle.test.y.tolist() == [0, 1, 2]
    assert bundle.train.x.dtype == torch.uint8 and bundle.train.x.shape == (5, 3, 6, 6)
    assert bundle.train.y.dtype == torch.int64
    assert bundle.test.x[2, :, 0, 0].tolist() == list(BLUE)  # labels follow the folders
    assert "train/test folders kept" in bundle.source and str(tmp_path / "pets") in bundle.source


def test_class_folders_get_a_seeded_stratified_test_split(tmp_path: Path, data_dir: Path) -> None:
    source = write_tree(tmp_path / "pets", class_files({"cat": 10, "dog": 5}))
    import_images(source, "pets", data_dir, test_fraction=0.2, seed=1)
    bundle = load_imported("pets", data_dir)
    assert bundle.test.y.bincount().tolist() == [2, 1] and bundle.train.y.bincount().tolist() == [8, 4]
    assert torch.equal(bundle.test.x[:, 0, 0, 0] == 250, bundle.test.y == 0)  # cats are red
    import_images(source, "again", data_dir, test_fraction=0.2, seed=1)
    assert torch.equal(load_imported("again", data_dir).test.x, bundle.test.x)
    assert "stratified 20% test split, seed 1" in bundle.source


def test_zip_with_a_wrapper_folder(tmp_path: Path, data_dir: Path) -> None:
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in class_files({"cat": 2, "dog": 2}, "my_pets/train/").items():
            zipped.writestr(name, data)
        for name, data in class_files({"cat": 1, "dog": 1}, "my_pets/test/").items():
            zipped.writestr(name, data)
        zipped.writestr("my_pets/README.txt", "notes about my pets")  # loose files belong to no class
    bundle = load_imported(import_images(archive, "pets", data_dir).stem, data_dir)
    assert (len(bundle.train), len(bundle.test), bundle.classes) == (4, 2, ["cat", "dog"])


@pytest.mark.parametrize(
    ("labels", "classes"),
    [({"cat": "cat", "dog": "dog"}, ["cat", "dog"]), ({"cat": "1", "dog": "2"}, ["0", "1", "2"])],
)
def test_labels_file(labels: dict[str, str], classes: list[str], tmp_path: Path, data_dir: Path) -> None:
    source = write_tree(
        tmp_path / "photos", {f"img/{i}.png": png(RED if i % 2 else GREEN) for i in range(10)}
    )
    lines = ["# path label", ""] + [f"img/{i}.png {labels['cat' if i % 2 else 'dog']}" for i in range(10)]
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(lines))
    bundle = load_imported(import_images(source, "photos", data_dir, labels_file=labels_file).stem, data_dir)
    assert bundle.classes == classes and len(bundle.train) + len(bundle.test) == 10
    cat = classes.index(labels["cat"])
    for split in (bundle.train, bundle.test):
        assert torch.equal(split.x[:, 0, 0, 0] == 250, split.y == cat)  # cats are red


def test_different_sizes_need_size(tmp_path: Path, data_dir: Path) -> None:
    files = class_files({"cat": 2}, size=(8, 6)) | class_files({"dog": 2}, size=(20, 30))
    source = write_tree(tmp_path / "mixed", files)
    with pytest.raises(ValueError, match=r"differ in size.*--size"):
        import_images(source, "mixed", data_dir)
    assert written(data_dir) == []
    bundle = load_imported(import_images(source, "mixed", data_dir, size=16).stem, data_dir)
    assert bundle.train.x.shape[1:] == (3, 16, 16) and bundle.test.x.shape[1:] == (3, 16, 16)


def test_grayscale_and_other_modes(tmp_path: Path, data_dir: Path) -> None:
    files = {
        "cat/a.png": png(RED, mode="RGBA"),
        "cat/b.png": png(RED, mode="P"),
        "dog/a.png": png(GREEN, mode="L"),
        "dog/b.jpg": png(GREEN, fmt="JPEG"),
    }
    source = write_tree(tmp_path / "modes", files)
    rgb = load_imported(import_images(source, "rgb", data_dir, test_fraction=0.5).stem, data_dir)
    assert rgb.train.x.shape[1] == 3
    gray = load_imported(
        import_images(source, "gray", data_dir, grayscale=True, test_fraction=0.5).stem, data_dir
    )
    assert gray.train.x.shape[1:] == (1, 6, 6) and gray.test.x.shape[1:] == (1, 6, 6)


def test_a_non_image_is_named_unless_skipped(tmp_path: Path, data_dir: Path) -> None:
    files = class_files({"cat": 3, "dog": 3}) | {"dog/notes.txt": b"not an image"}
    source = write_tree(tmp_path / "pets", files)
    with pytest.raises(ValueError, match=re.escape(str(source / "dog" / "notes.txt")) + ".*skip_bad"):
        import_images(source, "pets", data_dir)
    assert written(data_dir) == []
    bundle = load_imported(import_images(source, "pets", data_dir, skip_bad=True).stem, data_dir)
    assert len(bundle.train) + len(bundle.test) == 6 and "1 unreadable file skipped" in bundle.source


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("just-a-path.png", "expected 'relative/path label'"),
        ("img/missing.png cat", "no file 'img/missing.png'"),
    ],
)
def test_bad_labels_line_gives_file_and_line(line: str, message: str, tmp_path: Path, data_dir: Path) -> None:
    source = write_tree(tmp_path / "photos", {"img/0.png": png(RED), "img/1.png": png(GREEN)})
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text(f"img/0.png,cat\nimg/1.png,dog\n{line}\n")
    with pytest.raises(ValueError, match=re.escape(f"{labels_file}:3: {message}")):
        import_images(source, "photos", data_dir, labels_file=labels_file)
    assert written(data_dir) == []


@pytest.mark.parametrize("layout", ["empty", "empty class folders", "train only"])
def test_nothing_to_import(layout: str, tmp_path: Path, data_dir: Path) -> None:
    source = tmp_path / "nothing"
    (source / "cat").mkdir(parents=True)
    if layout == "train only":
        write_tree(source, class_files({"cat": 2, "dog": 2}, "train/"))
    with pytest.raises(ValueError, match="no test/" if layout == "train only" else "no images found in"):
        import_images(source, "nothing", data_dir)
    assert written(data_dir) == []


def test_bad_arguments(tmp_path: Path, data_dir: Path) -> None:
    source = write_tree(tmp_path / "pets", class_files({"cat": 2, "dog": 2}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_images(tmp_path / "nowhere", "pets", data_dir)
    for bad_name in ("my pets", "../escape", "", "pets.pt"):
        with pytest.raises(ValueError, match="bad import name"):
            import_images(source, bad_name, data_dir)
    with pytest.raises(ValueError, match="test_fraction"):
        import_images(source, "pets", data_dir, test_fraction=1.0)
    assert written(data_dir) == []


def test_refuses_to_overwrite_unless_asked(tmp_path: Path, data_dir: Path) -> None:
    source = write_tree(tmp_path / "pets", class_files({"cat": 2, "dog": 2}))
    import_images(source, "pets", data_dir)
    write_tree(source, class_files({"fox": 2}))
    with pytest.raises(ValueError, match="already exists.*--overwrite"):
        import_images(source, "pets", data_dir)
    assert load_imported("pets", data_dir).classes == ["cat", "dog"]
    import_images(source, "pets", data_dir, overwrite=True)
    assert load_imported("pets", data_dir).classes == ["cat", "dog", "fox"]
    assert written(data_dir) == ["pets.pt"]


def test_load_imported_round_trip_and_missing_name(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="none yet"):
        load_imported("pets", data_dir)
    source = write_tree(tmp_path / "pets", class_files({"cat": 4, "dog": 4}))
    path = import_images(source, "pets", data_dir)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"train_x", "train_y", "test_x", "test_y", "classes", "source"}
    bundle = load_imported("pets", data_dir)
    assert torch.equal(bundle.train.x, saved["train_x"]) and torch.equal(bundle.test.y, saved["test_y"])
    import_images(source, "zoo", data_dir)
    with pytest.raises(FileNotFoundError, match=r"no imported data set 'birds'.*imports there: pets, zoo"):
        load_imported("birds", data_dir)
