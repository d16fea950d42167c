"""CIFAR-100, SVHN, CelebA (gender) and Quick, Draw! loaders, on tiny files in the real formats.

Every test writes its own files into tmp_path; nothing touches the network: download paths
run with urlopen and socket connections patched to fail, as on an offline machine.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlzoo.cli import main
from dlzoo.data import sources
from dlzoo.data.sources import CIFAR10_CLASSES, CIFAR100_CLASSES, QUICKDRAW_URL
from dlzoo.registry import DATASETS

NEW_DATA_SETS = ["cifar100", "cifar100_coarse", "svhn", "celeba_gender", "quickdraw"]


@pytest.fixture(autouse=True)
def data_dir(isolated_data_dir: Path) -> Path:
    """Every test here caches into a temporary default data dir (conftest's ``isolated_data_dir``)."""
    return isolated_data_dir


def load(name: str, root: Path, download: bool = False):
    return DATASETS.get(name)(root, download)


def assert_one_line_naming(message: str, *parts: object) -> None:
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, f"{part} not in: {message}"


def test_data_list_shows_the_new_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out.split()
    assert set(NEW_DATA_SETS) <= set(listed)


# --------------------------------------------------------------------------- CIFAR-100

COARSE_NAMES = [f"super{index:02d}" for index in range(20)]


def write_cifar100(root: Path, fine: dict[str, list[int]]) -> Path:
    """Official-format pickles; image i of a split is R = 10 + i, G = 100, B = 200, its label at (R, 0, 1)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, labels in fine.items():
        data = np.zeros((len(labels), 3 * 32 * 32), dtype=np.uint8)
        data[:, :1024] = (10 + np.arange(len(labels)))[:, None]  # the red plane comes first
        data[:, 1024:2048], data[:, 2048:] = 100, 200
        data[:, 1] = labels  # red, row 0, column 1
        batch = {"filenames": [f"{i}.png" for i in labels], "fine_labels": labels, "data": data}
        batch["coarse_labels"] = [label // 5 for label in labels]
        (folder / split).write_bytes(pickle.dumps(batch))
    meta = {"fine_label_names": list(CIFAR100_CLASSES), "coarse_label_names": COARSE_NAMES}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return folder


def test_cifar100_official_batches(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, {"train": [0, 99, 42, 7], "test": [3, 64]})
    bundle = load("cifar100", tmp_path)
    assert bundle.train.x.shape == (4, 3, 32, 32) and bundle.train.x.dtype == torch.uint8
    assert bundle.train.y.tolist() == [0, 99, 42, 7] and bundle.train.y.dtype == torch.int64
    assert bundle.test.y.tolist() == [3, 64]
    assert bundle.classes == CIFAR100_CLASSES
    assert bundle.train.x[:, :, 5, 5].tolist() == [
        [10, 100, 200],
        [11, 100, 200],
        [12, 100, 200],
        [13, 100, 200],
    ]
    assert torch.equal(bundle.train.x[:, 0, 0, 1].long(), bundle.train.y)  # rows are row-major 32x32 planes
    assert str(folder) in bundle.source


def test_cifar100_coarse_uses_the_superclass_labels_and_names(tmp_path: Path) -> None:
    write_cifar100(tmp_path, {"train": [0, 99, 42, 7], "test": [3, 64]})
    bundle = load("cifar100_coarse", tmp_path)
    assert bundle.classes == COARSE_NAMES
    assert bundle.train.y.tolist() == [0, 19, 8, 1] and bundle.test.y.tolist() == [0, 12]


def test_cifar100_image_folder_copy(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "data"
    for split in ("train", "test"):
        for index, name in enumerate(CIFAR100_CLASSES):
            path = root / "cifar100" / split / name / "0001.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (2 * index, 0, 0)).save(path)
    bundle = load("cifar100", root)
    assert bundle.classes == CIFAR100_CLASSES
    assert bundle.train.x.shape == (100, 3, 4, 4) and bundle.test.x.shape == (100, 3, 4, 4)
    assert torch.equal(bundle.train.x[:, 0, 0, 0].long(), 2 * bundle.train.y)  # folder name -> label
    assert bundle.source == f"CIFAR-100 (image-folder copy, PNG) from {root / 'cifar100'}"
    assert len(list((data_dir / "cache").glob("cifar100-*.pt"))) == 1


def test_cifar100_missing_offline_says_what_to_place_where(tmp_path: Path, offline: list[str]) -> None:
    # A CIFAR-10 copy in the data dir is not mistaken for CIFAR-100.
    with zipfile.ZipFile(tmp_path / "cifar10.zip", "w") as archive:
        for split in ("train", "test"):
            for name in CIFAR10_CLASSES:
                archive.writestr(f"{split}/{name}/1.png", b"png")
    for download in (False, True):
        with pytest.raises(FileNotFoundError) as error:
            load("cifar100", tmp_path, download)
        assert_one_line_naming(str(error.value), "cifar-100-python", tmp_path / "cifar100")
        assert ("download failed" in str(error.value)) == download
    assert offline and "cifar-100-python.tar.gz" in offline[0]
    with pytest.raises(FileNotFoundError) as error:
        load("cifar100_coarse", tmp_path)
    assert "image-folder" not in str(error.value)  # only the official batches carry the superclasses


def test_cifar100_missing_meta_and_corrupt_batch_are_clear(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, {"train": [1], "test": [2]})
    (folder / "meta").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder / "meta")) + " is missing"):
        load("cifar100", tmp_path)
    write_cifar100(tmp_path / "again", {"train": [1], "test": [2]})
    (tmp_path / "again" / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="train is incomplete or corrupt"):
        load("cifar100", tmp_path / "again")


# --------------------------------------------------------------------------- SVHN


def write_svhn(folder: Path, labels: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """The official .mat layout: X (32, 32, 3, N) uint8, y (N, 1) with digit 0 stored as 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for split, split_labels in labels.items():
        images[split] = rng.integers(0, 256, (32, 32, 3, len(split_labels)), dtype=np.uint8)
        y = np.array(split_labels, dtype=np.uint8).reshape(-1, 1)
        savemat(folder / f"{split}_32x32.mat", {"X": images[split], "y": y})
    return images


@pytest.mark.parametrize("folder", ["svhn", ""])
def test_svhn_mat_files(folder: str, tmp_path: Path) -> None:
    images = write_svhn(tmp_path / folder, {"train": [1, 10, 9, 10, 5], "test": [10, 3]})
    bundle = load("svhn", tmp_path)
    assert bundle.train.x.shape == (5, 3, 32, 32) and bundle.train.x.dtype == torch.uint8
    assert bundle.train.y.tolist() == [1, 0, 9, 0, 5] and bundle.test.y.tolist() == [0, 3]  # 10 means 0
    assert bundle.train.y.dtype == torch.int64 and bundle.classes == [str(d) for d in range(10)]
    assert np.array_equal(bundle.test.x[1].numpy(), images["test"][:, :, :, 1].transpose(2, 0, 1))
    assert str(tmp_path / folder) in bundle.source


def test_svhn_missing_offline_says_what_to_place_where(tmp_path: Path, offline: list[str]) -> None:
    write_svhn(tmp_path / "svhn", {"train": [1]})  # the test file is missing
    for download in (False, True):
        with pytest.raises(FileNotFoundError) as error:
            load("svhn", tmp_path, download)
        assert_one_line_naming(str(error.value), "train_32x32.mat", "test_32x32.mat", tmp_path / "svhn")
        assert ("download failed" in str(error.value)) == download
    assert offline and offline[0].endswith("_32x32.mat")


def test_svhn_wrong_content_is_a_clear_error(tmp_path: Path) -> None:
    from scipy.io import savemat

    write_svhn(tmp_path / "svhn", {"train": [1], "test": [2]})
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": np.zeros((28, 28, 1, 2)), "y": np.ones((2, 1))})
    with pytest.raises(ValueError, match="test_32x32.mat is not an SVHN 32x32 file"):
        load("svhn", tmp_path)
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_32x32.mat cannot be read"):
        load("svhn", tmp_path)


# --------------------------------------------------------------------------- CelebA

ATTRIBUTES = [  # the 40 columns of list_attr_celeba.txt, in order
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]  # fmt: skip
MALE = [1, -1, 1, -1, 1, -1]
PARTITION = [0, 0, 1, 2, 2, 0]  # train, train, valid, test, test, train


def celeba_jpeg(index: int) -> bytes:
    """16x32 (W x H, portrait like CelebA): red bands above and below a square whose blue codes ``index``."""
    image = Image.new("RGB", (16, 32), (255, 0, 0))
    image.paste((0, 0, 40 * index + 20), (0, 8, 16, 24))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, subsampling=0)  # 4:4:4, bands on block edges: no bleeding
    return buffer.getvalue()


def write_celeba(folder: Path, as_zip: bool = False) -> Path:
    """torchvision's layout; the two lists in the official text format (CRLF, padded columns)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [f"{number:06d}.jpg" for number in range(1, len(MALE) + 1)]
    rows = [f"{len(files)}", " ".join(ATTRIBUTES) + " "]
    for file, male in zip(files, MALE):
        values = [male if name == "Male" else -1 for name in ATTRIBUTES]
        rows.append(file + "".join(f" {value:2d}" for value in values))
    (folder / "list_attr_celeba.txt").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    partition = "".join(f"{file} {split}\r\n" for file, split in zip(files, PARTITION))
    (folder / "list_eval_partition.txt").write_bytes(partition.encode())
    if as_zip:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as archive:
            for index, file in enumerate(files):
                archive.writestr(f"img_align_celeba/{file}", celeba_jpeg(index))
    else:
        (folder / "img_align_celeba").mkdir()
        for index, file in enumerate(files):
            (folder / "img_align_celeba" / file).write_bytes(celeba_jpeg(index))
    return folder


@pytest.mark.parametrize("as_zip", [False, True])
def test_celeba_gender_labels_splits_and_centre_crop(as_zip: bool, tmp_path: Path) -> None:
    folder = write_celeba(tmp_path / "celeba", as_zip)
    bundle = load("celeba_gender", tmp_path)
    assert bundle.classes == ["female", "male"]
    assert bundle.train.x.shape == (4, 3, 64, 64) and bundle.test.x.shape == (2, 3, 64, 64)
    assert bundle.train.x.dtype == torch.uint8 and bundle.train.y.dtype == torch.int64
    assert bundle.train.y.tolist() == [1, 0, 1, 0] and bundle.test.y.tolist() == [0, 1]  # valid joins train
    blue = bundle.train.x[:, 2].float().mean(dim=(1, 2))
    assert torch.allclose(blue, torch.tensor([20.0, 60.0, 100.0, 220.0]), atol=4)  # images 0, 1, 2, 5
    assert bundle.train.x[:, 0].max() <= 16 and bundle.test.x[:, 0].max() <= 16  # the red bands are cut off
    assert str(folder) in bundle.source


def test_celeba_is_decoded_once_then_cached(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_celeba(tmp_path / "celeba")
    first = load("celeba_gender", tmp_path)
    assert len(list((data_dir / "cache").glob("celeba_gender-64-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(sources, "decode_images", no_decoding)
    second = load("celeba_gender", tmp_path)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)


def test_celeba_missing_files_say_what_to_place_where(tmp_path: Path, offline: list[str]) -> None:
    for download in (False, True):
        with pytest.raises(FileNotFoundError) as error:
            load("celeba_gender", tmp_path, download)
        message = str(error.value)
        assert_one_line_naming(
            message,
            "img_align_celeba",
            "list_attr_celeba.txt",
            "list_eval_partition.txt",
            tmp_path / "celeba",
        )
        assert ("download failed" in message) == download
    folder = write_celeba(tmp_path / "celeba")
    (folder / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 images listed in .* are missing from .*e.g. 000004.jpg"):
        load("celeba_gender", tmp_path)


def test_celeba_attribute_list_without_male_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_celeba(tmp_path / "celeba")
    text = (folder / "list_attr_celeba.txt").read_text().replace("Male", "Mail")
    (folder / "list_attr_celeba.txt").write_text(text)
    with pytest.raises(ValueError, match="not a CelebA attribute list"):
        load("celeba_gender", tmp_path)


# --------------------------------------------------------------------------- Quick, Draw!


def drawings(class_index: int, count: int) -> np.ndarray:
    """uint8 (count, 784); pixel 0 = 100 * class + drawing number, so each drawing is traceable."""
    array = np.zeros((count, 784), dtype=np.uint8)
    array[:, 0] = 100 * class_index + np.arange(count)
    array[:, 400] = 255  # some ink mid-image
    return array


def test_quickdraw_google_npy_files(tmp_path: Path) -> None:
    folder = tmp_path / "quickdraw"
    folder.mkdir()
    np.save(folder / "full_numpy_bitmap_cat.npy", drawings(0, 10))  # the name a browser download gets
    np.save(folder / "apple.npy", drawings(1, 10))  # the name in the bucket
    bundle = load("quickdraw", tmp_path)
    assert bundle.classes == ["apple", "cat"]  # sorted
    assert bundle.train.x.shape == (16, 1, 28, 28) and bundle.test.x.shape == (4, 1, 28, 28)
    assert bundle.train.x.dtype == torch.uint8 and bundle.train.y.dtype == torch.int64
    assert bundle.train.y.bincount().tolist() == [8, 8] and bundle.test.y.bincount().tolist() == [2, 2]
    pixel = torch.cat([bundle.train.x, bundle.test.x])[:, 0, 0, 0].long()
    labels = torch.cat([bundle.train.y, bundle.test.y])
    assert torch.equal(pixel // 100, 1 - labels)  # apple drawings came from class index 1 of the writer
    assert sorted(pixel.tolist()) == list(range(10)) + list(range(100, 110))  # none lost, none twice
    again = load("quickdraw", tmp_path)
    assert torch.equal(again.test.x, bundle.test.x)  # the fixed split does not move


def test_quickdraw_raw_bytes_like_the_shared_copy(tmp_path: Path) -> None:
    folder = tmp_path / "quickdraw"
    folder.mkdir()
    (folder / "cats5.bin").write_bytes(drawings(0, 5).tobytes())
    (folder / "trains5.bin").write_bytes(drawings(1, 5).tobytes())
    (folder / "README.md").write_text("not a class")
    bundle = load("quickdraw", tmp_path)
    assert bundle.classes == ["cats", "trains"]  # the trailing count is not part of the name
    assert len(bundle.train) == 8 and len(bundle.test) == 2
    assert torch.equal(bundle.train.x[:, 0, 0, 0].long() // 100, bundle.train.y)
    assert bundle.train.x[0, 0, 14, 8] == 255  # pixel 400 = row 14, column 8


def test_quickdraw_classes_txt_fixes_the_classes_and_their_order(tmp_path: Path) -> None:
    folder = tmp_path / "quickdraw"
    folder.mkdir()
    for index, name in enumerate(["cat", "dog", "sun"]):
        np.save(folder / f"{name}.npy", drawings(index, 5))
    (folder / "classes.txt").write_text("sun\ncat\n")
    bundle = load("quickdraw", tmp_path)
    assert bundle.classes == ["sun", "cat"]
    assert torch.equal(bundle.train.x[:, 0, 0, 0].long() // 100, 2 - 2 * bundle.train.y)


def test_quickdraw_missing_class_names_the_url(tmp_path: Path, offline: list[str]) -> None:
    folder = tmp_path / "quickdraw"
    with pytest.raises(FileNotFoundError) as error:
        load("quickdraw", tmp_path)
    assert_one_line_naming(str(error.value), folder, "classes.txt", QUICKDRAW_URL.format("<class>"))
    folder.mkdir()
    np.save(folder / "cat.npy", drawings(0, 5))
    (folder / "classes.txt").write_text("cat\nThe Eiffel Tower\n")
    url = QUICKDRAW_URL.format("The%20Eiffel%20Tower")
    for download in (False, True):
        with pytest.raises(FileNotFoundError) as error:
            load("quickdraw", tmp_path, download)
        assert_one_line_naming(str(error.value), "'The Eiffel Tower'", url, folder)
        assert ("download failed" in str(error.value)) == download
    assert offline and offline[0] == url


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cats.bin", bytes(784 * 2 + 5), "not a whole number of 784-byte"),
        ("cats.npy", np.zeros((2, 28, 28), dtype=np.uint8), "expected uint8 \\(N, 784\\)"),
        ("cats.npy", np.zeros((2, 784), dtype=np.float32), "expected uint8 \\(N, 784\\)"),
    ],
)
def test_quickdraw_wrong_files_are_clear_errors(
    name: str, content: object, message: str, tmp_path: Path
) -> None:
    folder = tmp_path / "quickdraw"
    folder.mkdir()
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        np.save(folder / name, content)
    with pytest.raises(ValueError, match=re.escape(str(folder / name)) + ".*" + message):
        load("quickdraw", tmp_path)


def test_quickdraw_one_class_in_two_files_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "quickdraw"
    folder.mkdir()
    np.save(folder / "cat.npy", drawings(0, 2))
    (folder / "cat1000.bin").write_bytes(drawings(0, 2).tobytes())
    with pytest.raises(ValueError, match="both hold the Quick, Draw! class 'cat'"):
        load("quickdraw", tmp_path)


def test_real_quickdraw_copy(shared_data: Path) -> None:
    folder = shared_data / "quickdraw"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the real Quick, Draw! copy is not beside this checkout")
    bundle = load("quickdraw", shared_data)
    assert bundle.classes == ["cats", "rainbows", "trains"]
    assert bundle.train.x.shape == (2400, 1, 28, 28) and bundle.test.x.shape == (600, 1, 28, 28)
    assert bundle.train.y.bincount().tolist() == [800] * 3 and bundle.test.y.bincount().tolist() == [200] * 3
    ink = torch.cat([bundle.train.x, bundle.test.x]).flatten(1).long().sum(1)
    assert (ink > 0).all()  # every drawing has strokes
    expected = sum(
        np.frombuffer(path.read_bytes(), np.uint8).astype(np.int64).sum() for path in folder.iterdir()
    )
    assert int(ink.sum()) == expected  # every byte of every file, once
