"""Data set loaders: scikit-learn sets, IDX parsing, CIFAR-10 copies, caching, offline errors.

Nothing here touches the network: download paths are run with urlopen and
socket connections patched to fail, the way an offline machine behaves.
"""

from __future__ import annotations

import gzip
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlzoo.data import sources
from dlzoo.data.sources import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, IDX_FILES, FileTree, stratified_split
from dlzoo.registry import DATASETS

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def data_dir(isolated_data_dir: Path) -> Path:
    """Every test here caches into a temporary default data dir (conftest's ``isolated_data_dir``)."""
    return isolated_data_dir


# --------------------------------------------------------------------------- scikit-learn sets


@pytest.mark.parametrize("name", ["digits", "iris"])
def test_sklearn_sets_have_a_fixed_stratified_test_split(name: str, tmp_path: Path) -> None:
    first = DATASETS.get(name)(tmp_path, False)
    second = DATASETS.get(name)(tmp_path, False)
    assert torch.equal(first.test.x, second.test.x) and torch.equal(first.test.y, second.test.y)
    assert first.train.y.dtype == torch.int64
    counts = first.train.y.bincount() + first.test.y.bincount()
    for total, in_test in zip(counts.tolist(), first.test.y.bincount().tolist(), strict=True):
        assert abs(in_test - 0.2 * total) <= 1  # every class holds out its 20%
    total = len(first.train) + len(first.test)
    assert len(first.test) == pytest.approx(0.2 * total, abs=len(first.classes))


def test_digits_are_uint8_images_scaled_to_255(tmp_path: Path) -> None:
    bundle = DATASETS.get("digits")(tmp_path, False)
    assert bundle.train.x.dtype == torch.uint8 and bundle.train.x.shape[1:] == (1, 8, 8)
    assert len(bundle.train) + len(bundle.test) == 1797
    assert bundle.train.x.max() == 255 and bundle.classes == [str(d) for d in range(10)]


def test_iris_is_float32_features(tmp_path: Path) -> None:
    bundle = DATASETS.get("iris")(tmp_path, False)
    assert bundle.train.x.dtype == torch.float32 and bundle.train.x.shape == (120, 4)
    assert bundle.test.y.bincount().tolist() == [10, 10, 10]
    assert bundle.classes == ["setosa", "versicolor", "virginica"]


def test_stratified_split_is_seeded_disjoint_and_keeps_singletons_in_train() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2])
    train, test = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    again_train, again_test = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(test, again_test) and np.array_equal(train, again_train)
    assert any(not np.array_equal(test, stratified_split(labels, 0.2, seed=s)[1]) for s in range(4, 10))


# --------------------------------------------------------------------------- IDX files


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8, 1 or 3 dims) as an IDX file, gzip'd when the name ends in .gz."""
    magic = 0x800 + array.ndim
    data = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_mnist(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(6) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([9, 0, 4]),
    }
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize(
    ("name", "folder", "gz"),
    [
        ("mnist", "", True),
        ("mnist", "mnist", False),
        ("mnist", "MNIST/raw", True),
        ("fashion_mnist", "fashion-mnist", True),
        ("fashion_mnist", "fashion_mnist", False),
        ("fashion_mnist", "FashionMNIST/raw", False),
    ],
)
def test_idx_files_load_from_every_layout(name: str, folder: str, gz: bool, tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / folder, gz)
    bundle = DATASETS.get(name)(tmp_path, False)
    assert bundle.train.x.dtype == torch.uint8 and bundle.train.x.shape == (6, 1, 28, 28)
    assert np.array_equal(bundle.train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert bundle.test.y.tolist() == [9, 0, 4] and bundle.test.y.dtype == torch.int64
    assert bundle.classes == (
        FASHION_MNIST_CLASSES if name == "fashion_mnist" else [str(d) for d in range(10)]
    )
    assert str(tmp_path / folder) in bundle.source


def test_idx_wrong_magic_names_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", gz=True)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(struct.pack(">II", 2051, 3) + bytes(3)))  # image magic on a label file
    with pytest.raises(ValueError, match=re.escape(str(labels)) + ".*magic number 2051, expected 2049"):
        DATASETS.get("mnist")(tmp_path, False)


@pytest.mark.parametrize(
    ("stem", "content", "message"),
    [
        (
            "train-images-idx3-ubyte",
            struct.pack(">IIII", 2051, 6, 28, 28) + bytes(100),
            "truncated or corrupt",
        ),
        ("train-labels-idx1-ubyte", struct.pack(">II", 2049, 5) + bytes(5), "has 6 images but"),
        ("train-labels-idx1-ubyte", struct.pack(">II", 2049, 6) + bytes([0, 1, 2, 3, 4, 12]), "has label 12"),
    ],
)
def test_idx_corrupt_content_is_a_clear_error(
    stem: str, content: bytes, message: str, tmp_path: Path
) -> None:
    write_mnist(tmp_path, gz=False)
    (tmp_path / stem).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        DATASETS.get("mnist")(tmp_path, False)


def test_idx_broken_gzip_names_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    broken = tmp_path / "train-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(ValueError, match=re.escape(str(broken))):
        DATASETS.get("mnist")(tmp_path, False)


def assert_names_four_files(message: str, folder: Path) -> None:
    assert "\n" not in message
    for stem in IDX_FILES:
        assert f"{stem}.gz" in message
    assert f" in {folder} " in message


@pytest.mark.parametrize(("name", "folder"), [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")])
def test_idx_missing_offline_says_what_to_place_where(name: str, folder: str, tmp_path: Path) -> None:
    write_idx(tmp_path / folder / "train-images-idx3-ubyte.gz", np.zeros((1, 2, 2)))  # an incomplete set
    with pytest.raises(FileNotFoundError) as error:
        DATASETS.get(name)(tmp_path, False)
    assert_names_four_files(str(error.value), tmp_path / folder)
    assert "download allowed" in str(error.value)


@pytest.mark.parametrize(("name", "folder"), [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")])
def test_idx_download_without_network_gives_the_same_clear_error(
    name: str, folder: str, tmp_path: Path, offline: list[str]
) -> None:
    with pytest.raises(FileNotFoundError) as error:
        DATASETS.get(name)(tmp_path, True)
    assert_names_four_files(str(error.value), tmp_path / folder)
    assert "download failed" in str(error.value)
    assert offline and all(url.startswith("http") and "ubyte.gz" in url for url in offline)


# --------------------------------------------------------------------------- CIFAR-10 image folders


def image_bytes(value: int, fmt: str, size: int = 8) -> bytes:
    """A flat-coloured RGB image whose red channel encodes ``value``."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, 255 - value, 7)).save(buffer, format=fmt)
    return buffer.getvalue()


def cifar_layout(per_class: dict[str, int], fmt: str = "PNG") -> dict[str, bytes]:
    """{relative path: bytes} of a tiny CIFAR-10 image folder; red = 20 * class index."""
    extension = "jpg" if fmt == "JPEG" else fmt.lower()
    files = {}
    for split, count in per_class.items():
        for index, name in enumerate(CIFAR10_CLASSES):
            for number in range(count):
                files[f"{split}/{name}/{number:04d}.{extension}"] = image_bytes(20 * index, fmt)
    return files


def write_tree(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(prefix + name, data)
    return path


def test_cifar10_image_folder_maps_classes_to_the_standard_order(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # Only the folder names say which class is which; their order on disk must not matter.
    write_tree(root / "cifar10", cifar_layout({"train": 2, "test": 1}))
    bundle = DATASETS.get("cifar10")(root, False)
    assert bundle.classes == CIFAR10_CLASSES
    assert bundle.train.x.shape == (20, 3, 8, 8) and bundle.train.x.dtype == torch.uint8
    assert bundle.train.y.bincount().tolist() == [2] * 10 and bundle.test.y.bincount().tolist() == [1] * 10
    assert torch.equal(bundle.train.x[:, 0, 0, 0].long(), 20 * bundle.train.y)  # PNG is lossless
    assert bundle.source == f"CIFAR-10 (image-folder copy, PNG) from {root / 'cifar10'}"


@pytest.mark.parametrize(
    ("relative", "prefix", "expected"),
    [
        ("cifar10-jpeg/cifar10-jpeg-q75.zip", "", "CIFAR-10 (JPEG q75 copy) from "),
        ("stuff.zip", "cifar10-images/", "CIFAR-10 (image-folder copy, JPEG) from "),
    ],
)
def test_cifar10_zip_copies_are_found_and_labelled_honestly(
    relative: str, prefix: str, expected: str, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    write_zip(root / "other.zip" if relative == "stuff.zip" else root / "unrelated.zip", {"a/b.txt": b"x"})
    path = write_zip(root / relative, cifar_layout({"train": 2, "test": 1}, "JPEG"), prefix)
    bundle = DATASETS.get("cifar10")(root, False)
    assert bundle.source == expected + str(path)
    assert len(bundle.train) == 20 and len(bundle.test) == 10
    # JPEG is lossy, yet a flat colour survives to within a few levels.
    assert (bundle.train.x[:, 0, 4, 4].long() - 20 * bundle.train.y).abs().max() <= 4


def test_cifar10_cache_is_reused_and_follows_the_source(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    source = write_zip(root / "cifar10-jpeg" / "copy.zip", cifar_layout({"train": 1, "test": 1}))
    first = DATASETS.get("cifar10")(root, False)
    cached = list((data_dir / "cache").glob("cifar10-*.pt"))
    assert len(cached) == 1 and not list((data_dir / "cache").glob(".*tmp"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although a cache exists")

    with monkeypatch.context() as patch:
        patch.setattr(sources, "decode_images", no_decoding)
        second = DATASETS.get("cifar10")(root, False)
        assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)
        assert second.source == first.source
        write_zip(source, cifar_layout({"train": 2, "test": 1}))  # a new copy must not use the old cache
        with pytest.raises(AssertionError, match="decoded again"):
            DATASETS.get("cifar10")(root, False)
    assert len(DATASETS.get("cifar10")(root, False).train) == 20


def test_cifar10_torn_cache_is_rebuilt(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "data"
    write_tree(root / "cifar10", cifar_layout({"train": 1, "test": 1}))
    DATASETS.get("cifar10")(root, False)
    (cache,) = (data_dir / "cache").glob("cifar10-*.pt")
    cache.write_bytes(cache.read_bytes()[:100])
    assert len(DATASETS.get("cifar10")(root, False).train) == 10


def test_cifar10_named_folder_with_wrong_classes_is_an_error(tmp_path: Path) -> None:
    files = {
        name.replace("/truck/", "/lorry/"): data
        for name, data in cifar_layout({"train": 1, "test": 1}).items()
    }
    write_tree(tmp_path / "cifar10", files)
    with pytest.raises(ValueError, match="not an image-folder copy of CIFAR-10.*'lorry'"):
        DATASETS.get("cifar10")(tmp_path, False)


def test_cifar10_corrupt_official_batches_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="incomplete or corrupt"):
        DATASETS.get("cifar10")(tmp_path, False)


def test_cifar10_missing_offline_says_what_to_place_where(tmp_path: Path, offline: list[str]) -> None:
    write_zip(tmp_path / "holiday-photos.zip", {"beach/1.png": image_bytes(0, "PNG")})  # not CIFAR: skipped
    for download in (False, True):
        with pytest.raises(FileNotFoundError) as error:
            DATASETS.get("cifar10")(tmp_path, download)
        message = str(error.value)
        assert (
            "\n" not in message and "cifar-10-batches-py" in message and str(tmp_path / "cifar10") in message
        )
        assert ("download failed" in message) == download
    assert offline and "cifar-10-python.tar.gz" in offline[0]


# --------------------------------------------------------------------------- shared image-folder reader


def test_file_tree_looks_through_a_wrapper_folder_and_ignores_hidden_files(tmp_path: Path) -> None:
    files = {"cats/1.png": b"1", "dogs/2.png": b"2", "cats/.DS_Store": b"", "README": b"hi"}
    archive = write_zip(tmp_path / "pets.zip", files, prefix="pets/")
    with zipfile.ZipFile(archive, "a") as extra:
        extra.writestr("__MACOSX/pets/._1.png", b"")
    with FileTree(archive, unwrap=True) as tree:
        assert tree.files == ["README", "cats/1.png", "dogs/2.png"]
        assert tree.read("dogs/2.png") == b"2"
        assert tree.folders() == {"cats": ["cats/1.png"], "dogs": ["dogs/2.png"]}
    single_class = write_tree(tmp_path / "one", {"cats/1.png": b"1"})
    assert FileTree(single_class, unwrap=True).files == ["cats/1.png"]  # a folder of files is a class


@pytest.mark.parametrize(("fmt", "mode"), [("BMP", "RGB"), ("PNG", "P"), ("PNG", "RGBA"), ("TIFF", "L")])
def test_decode_image_handles_formats_and_modes(fmt: str, mode: str) -> None:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (200, 100, 50)).convert(mode).save(buffer, format=fmt)
    rgb = sources.decode_image(buffer.getvalue())
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 3, 5)
    assert sources.decode_image(buffer.getvalue(), grayscale=True, size=4).shape == (1, 4, 4)
    with pytest.raises(sources.BAD_IMAGE_ERRORS):
        sources.decode_image(b"not an image")


def test_decode_image_turns_phone_photos_upright() -> None:
    import io

    buffer, exif = io.BytesIO(), Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: the camera was held sideways
    Image.new("RGB", (5, 3), (200, 100, 50)).save(buffer, format="JPEG", exif=exif)
    assert sources.decode_image(buffer.getvalue()).shape == (3, 5, 3)  # (C, H, W) after turning


# --------------------------------------------------------------------------- real copies in ../shared/data


def shared(path: str) -> Path:
    if not (SHARED_DATA / path).exists():
        pytest.skip(f"../shared/data not found ({SHARED_DATA / path} is absent)")
    return SHARED_DATA


@pytest.mark.slow
def test_real_mnist() -> None:
    bundle = DATASETS.get("mnist")(shared("mnist"), False)
    assert bundle.train.x.shape == (60000, 1, 28, 28) and bundle.test.x.shape == (10000, 1, 28, 28)
    assert bundle.train.y[:5].tolist() == [5, 0, 4, 1, 9]  # the famous first digits


@pytest.mark.slow
def test_real_cifar10_jpeg_zip(monkeypatch: pytest.MonkeyPatch) -> None:
    root = shared("cifar10-jpeg/cifar10-jpeg-q75.zip")
    # The user's own cache dir: decoding 60,000 JPEGs happens once, later runs take about a second.
    monkeypatch.delenv("DLZOO_DATA_DIR")
    bundle = DATASETS.get("cifar10")(root, False)
    assert bundle.train.x.shape == (50000, 3, 32, 32) and bundle.test.x.shape == (10000, 3, 32, 32)
    assert (
        bundle.train.y.bincount().tolist() == [5000] * 10 and bundle.test.y.bincount().tolist() == [1000] * 10
    )
    assert bundle.source.startswith("CIFAR-10 (JPEG q75 copy) from ")
