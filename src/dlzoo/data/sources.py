"""Where each data set's bytes come from, and how they become in-memory tensors.

Every loader here is registered in ``DATASETS`` as ``(root, download) -> DataBundle``
and looks for a local copy first (``root`` is the resolved data dir). Only when
none is found, and downloading is allowed, does it call torchvision's download
code, which uses the official URLs and checksums. Offline with no copy, the
error says in one line which files to place in which folder.

- ``digits``, ``iris``: scikit-learn's bundled copies, with a fixed stratified
  20% test split (the same on every run, whatever the run seed).
- ``mnist``, ``fashion_mnist``: the official IDX files, gzip'd or not, parsed
  here with numpy (local copies are not MD5-checked: a re-gzipped copy has
  different archive bytes but the same content).
- ``cifar10``, ``cifar100``: the official python batches, or an image-folder
  copy (a folder or .zip of ``train/<class>/*`` and ``test/<class>/*``).
  ``cifar100_coarse`` is CIFAR-100 with the 20 superclass labels (official
  batches only). Decoded image folders are cached as tensors under
  ``default_data_dir()/cache``, never beside the source, which may be read-only.
- ``svhn``: the official ``train_32x32.mat``/``test_32x32.mat`` (digit 0 is
  labelled 10 there, 0 here).
- ``celeba_gender``: CelebA's aligned faces labelled by the Male attribute,
  centre-cropped and resized to 64x64 once, then cached.
- ``quickdraw``: Quick, Draw! 28x28 bitmaps, one file per class (Google's
  ``.npy`` or raw bytes), with a fixed stratified 20% test split.

Apart from CIFAR-10's official batches (read by torchvision), local copies are
parsed here without MD5 checks (a re-packed copy has other bytes but the same
content); downloads go through torchvision, which checks them where the source
publishes checksums.

The image-folder reader (:class:`FileTree`, :func:`read_image_folder`) is shared
with :mod:`dlzoo.data.importer`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import os
import pickle
import re
import struct
import tempfile
import urllib.parse
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from dlzoo.data.core import DataBundle, Split, default_data_dir
from dlzoo.registry import DATASETS

log = logging.getLogger(__name__)

FIXED_SPLIT_SEED = 0
"""Seed of the held-out test split for data sets without an official one; never the run seed."""
FIXED_TEST_FRACTION = 0.2

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab",
    "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl",
    "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel",
    "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
]  # fmt: skip
"""The fine label names of the official ``meta`` file (alphabetical); image-folder copies use these."""

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
CELEBA_CLASSES = ["female", "male"]
CELEBA_LISTS = ("list_attr_celeba.txt", "list_eval_partition.txt")
CELEBA_SIZE = 64
"""Side of the cached CelebA images (square centre crop, then resized), as in DCGAN."""
QUICKDRAW_URL = "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/{}.npy"
QUICKDRAW_PIXELS = 28 * 28

CACHE_VERSION = 1
"""Bump when the decoding changes, so stale caches are not reused."""

# Errors that mean "this file is not a readable image" (PIL's UnidentifiedImageError is an OSError).
BAD_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zlib.error, Image.DecompressionBombError)


# --------------------------------------------------------------------------- splits and files


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each sorted, holding out ``test_fraction`` of every class.

    Each class with two or more examples keeps at least one in each split; a
    class with a single example stays in train.
    """
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_test = round(len(members) * test_fraction)
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) >= 2 else 0
        test.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test)) if test else np.empty(0, dtype=np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return np.flatnonzero(~is_test), test_idx


def bundle_to_dict(bundle: DataBundle) -> dict:
    """The plain dict stored in cache and import files (loadable with ``weights_only=True``)."""
    return {
        "train_x": bundle.train.x, "train_y": bundle.train.y,
        "test_x": bundle.test.x, "test_y": bundle.test.y,
        "classes": list(bundle.classes), "source": bundle.source,
    }  # fmt: skip


def bundle_from_dict(data: object, path: Path) -> DataBundle:
    keys = {"train_x", "train_y", "test_x", "test_y", "classes", "source"}
    if not isinstance(data, dict) or not keys <= set(data):
        raise ValueError(f"{path} is not a dlzoo data file (it needs the keys {sorted(keys)})")
    return DataBundle(
        Split(data["train_x"], data["train_y"]),
        Split(data["test_x"], data["test_y"]),
        list(data["classes"]),
        data["source"],
    )


def save_atomic(obj: object, path: Path) -> None:
    """torch.save to a temp file beside ``path``, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def cached_bundle(path: Path, build: Callable[[], DataBundle]) -> DataBundle:
    """Load the tensors cached at ``path`` (see :func:`cache_path`), else ``build()`` and cache them."""
    if path.is_file():
        try:
            return bundle_from_dict(torch.load(path, weights_only=True), path)
        except Exception as err:  # a torn or foreign cache file is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", path, err)
    bundle = build()
    try:
        save_atomic(bundle_to_dict(bundle), path)
    except OSError as err:
        warnings.warn(f"could not write the cache {path} ({err}); the next load decodes again", stacklevel=2)
    return bundle


def cache_path(name: str, source: Path) -> Path:
    """``default_data_dir()/cache/<name>-<hash>.pt``, the hash changing whenever ``source`` does.

    It hashes the resolved path, size and modification time of ``source`` (for
    a folder: its file count, total size and newest mtime).
    """
    source = source.resolve()
    if source.is_dir():
        stats = [
            os.stat(os.path.join(folder, file)) for folder, _, files in os.walk(source) for file in files
        ]
        total_size = sum(stat.st_size for stat in stats)
        newest = max((stat.st_mtime_ns for stat in stats), default=0)
        fingerprint = f"{source}|dir|{len(stats)}|{total_size}|{newest}"
    else:
        stat = source.stat()
        fingerprint = f"{source}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{fingerprint}".encode()).hexdigest()[:16]
    return default_data_dir() / "cache" / f"{name}-{digest}.pt"


# --------------------------------------------------------------------------- image folders


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.split("/"))


class FileTree:
    """The files of a directory or a .zip archive, named by relative POSIX paths.

    With ``unwrap=True`` a single wrapping folder (``my_data/cats/1.jpg``, as
    zipping a folder makes) is looked through, so ``files`` read ``cats/1.jpg``.
    """

    def __init__(self, path: Path, *, unwrap: bool = False) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            names = [
                Path(folder, file).relative_to(path).as_posix()
                for folder, _, files in os.walk(path)
                for file in files
            ]
        elif path.is_file() and zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            names = [info.filename for info in self._zip.infolist() if not info.is_dir()]
        elif path.exists():
            raise ValueError(f"{path} is neither a folder nor a .zip archive of images")
        else:
            raise FileNotFoundError(f"{path} does not exist")
        names = sorted(name for name in names if not _is_hidden(name))
        self._prefix = ""
        while unwrap and names:
            top = {name.split("/", 1)[0] for name in names}
            wrapper = next(iter(top))
            has_subfolders = any(name.count("/") >= 2 for name in names)
            # A lone folder with sub-folders wraps the data; a lone folder of files is one class.
            if len(top) > 1 or wrapper in ("train", "test") or not has_subfolders:
                break
            self._prefix += wrapper + "/"
            names = [name.split("/", 1)[1] for name in names]
        self.files = names

    def describe(self, relative: str) -> str:
        """How to name one file in an error message."""
        separator = ":" if self._zip is not None else "/"  # pets.zip:cats/1.jpg, pets/cats/1.jpg
        return f"{self.path}{separator}{self._prefix}{relative}"

    def read(self, relative: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._prefix + relative)
        return (self.path / (self._prefix + relative)).read_bytes()

    def folders(self, under: str = "") -> dict[str, list[str]]:
        """{folder name: its files} for each folder directly ``under`` this one; loose files are ignored."""
        prefix = under.rstrip("/") + "/" if under else ""
        groups: dict[str, list[str]] = {}
        for name in self.files:
            if name.startswith(prefix) and "/" in name[len(prefix) :]:
                groups.setdefault(name[len(prefix) :].split("/", 1)[0], []).append(name)
        return groups

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> FileTree:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def decode_image(
    data: bytes, *, grayscale: bool = False, size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Encoded image bytes -> uint8 (C, H, W), C = 1 or 3, resized to ``size`` (a side or (H, W)) when given.

    torchvision's decoder handles JPEG/PNG/GIF/WebP about 3x faster than PIL;
    anything it refuses (BMP, TIFF, 16-bit PNG, animated GIF...) goes through
    PIL, as does everything once torchvision drops its decoders (deprecated
    since 0.29 in favour of TorchCodec). Raises one of ``BAD_IMAGE_ERRORS``
    when the bytes are not an image.
    """
    channels = 1 if grayscale else 3
    image = None
    try:
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_image as tv_decode

        mode = ImageReadMode.GRAY if grayscale else ImageReadMode.RGB
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision")
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            image = tv_decode(encoded, mode=mode, apply_exif_orientation=True)  # phone photos stand upright
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != channels:
            image = None
    except (ImportError, RuntimeError, ValueError):
        image = None
    if image is None:
        with Image.open(io.BytesIO(data)) as pil_image:
            upright = ImageOps.exif_transpose(pil_image)
            array = np.asarray(upright.convert("L" if grayscale else "RGB"))
        image = torch.from_numpy(array.reshape(*array.shape[:2], channels).copy()).permute(2, 0, 1)
    target = (size, size) if isinstance(size, int) else size
    if target is not None and tuple(image.shape[1:]) != tuple(target):
        from torchvision.transforms.v2.functional import resize

        image = resize(image, list(target), antialias=True)
    return image


def decode_images(
    tree: FileTree,
    files: list[str],
    *,
    size: int | None = None,
    grayscale: bool = False,
    skip_bad: bool = False,
) -> tuple[torch.Tensor, list[int]]:
    """Decode ``files`` of ``tree`` into one uint8 (N, C, H, W) tensor.

    Returns the tensor and the indices into ``files`` that it holds (all of
    them unless ``skip_bad`` skipped unreadable files). Without ``size``, every
    image must already have the same height and width.
    """
    images: torch.Tensor | None = None
    kept: list[int] = []
    for index, name in enumerate(files):
        try:
            image = decode_image(tree.read(name), grayscale=grayscale, size=size)
        except BAD_IMAGE_ERRORS as err:
            if skip_bad:
                continue
            raise ValueError(
                f"{tree.describe(name)} is not a readable image ({type(err).__name__}: {err}); "
                "remove it or pass skip_bad=True (--skip-bad) to skip such files"
            ) from err
        if images is None:
            images = torch.empty((len(files), *image.shape), dtype=torch.uint8)  # (N, C, H, W), trimmed below
            first = name
        elif image.shape != images.shape[1:]:
            raise ValueError(
                f"images differ in size: {tree.describe(first)} is {images.shape[3]}x{images.shape[2]} but "
                f"{tree.describe(name)} is {image.shape[2]}x{image.shape[1]} (width x height); "
                "pass size=N (--size N) to resize every image to NxN"
            )
        images[len(kept)] = image
        kept.append(index)
    if images is None:
        skipped = f" ({len(files)} unreadable files skipped)" if files else ""
        raise ValueError(f"no images found in {tree.path}{skipped}")
    return images[: len(kept)].clone() if len(kept) < len(files) else images, kept


@dataclass
class ImageFolder:
    """Images read from ``<class>/<file>`` folders."""

    x: torch.Tensor
    """uint8 (N, C, H, W)."""
    y: torch.Tensor
    """int64 (N,) indices into ``classes``."""
    classes: list[str]
    skipped: list[str]
    """Unreadable files left out (only with ``skip_bad``)."""


def read_image_folder(
    source: Path | FileTree,
    under: str = "",
    *,
    classes: list[str] | None = None,
    size: int | None = None,
    grayscale: bool = False,
    skip_bad: bool = False,
) -> ImageFolder:
    """Read ``<class>/<file>`` images from a folder or .zip (optionally from its sub-folder ``under``).

    ``classes`` fixes the label order (each folder must be one of them);
    without it the folder names, sorted, are the classes. Files that sit
    directly in ``under`` (a README, say) are not part of any class and are ignored.
    """
    tree = source if isinstance(source, FileTree) else FileTree(source, unwrap=True)
    try:
        groups = tree.folders(under)
        where = f"{tree.describe(under)}" if under else str(tree.path)
        if not groups:
            raise ValueError(f"no images found in {where}: expected <class>/<image> folders")
        if classes is None:
            classes = sorted(groups)
        unknown = sorted(set(groups) - set(classes))
        if unknown:
            raise ValueError(f"folders {unknown} in {where} are not among the classes {classes}")
        files = [file for name in classes for file in groups.get(name, [])]
        labels = [index for index, name in enumerate(classes) for _ in groups.get(name, [])]
        x, kept = decode_images(tree, files, size=size, grayscale=grayscale, skip_bad=skip_bad)
    finally:
        if tree is not source:
            tree.close()
    skipped = sorted(set(files) - {files[index] for index in kept})
    y = torch.tensor([labels[index] for index in kept], dtype=torch.int64)
    return ImageFolder(x, y, list(classes), skipped)


# --------------------------------------------------------------------------- scikit-learn data sets


def _fixed_split_bundle(x: torch.Tensor, y: np.ndarray, classes: list[str], source: str) -> DataBundle:
    train_idx, test_idx = stratified_split(y, FIXED_TEST_FRACTION, FIXED_SPLIT_SEED)
    labels = torch.from_numpy(y.astype(np.int64))
    train_t, test_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return DataBundle(Split(x[train_t], labels[train_t]), Split(x[test_t], labels[test_t]), classes, source)


@DATASETS.register("digits")
def digits(root: Path, download: bool) -> DataBundle:
    """scikit-learn's 1,797 8x8 handwritten digits (bundled, offline), 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    x = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 8, 8)
    source = f"scikit-learn load_digits (bundled), fixed stratified {FIXED_TEST_FRACTION:.0%} test split"
    return _fixed_split_bundle(x, data.target, [str(d) for d in range(10)], source)


@DATASETS.register("iris")
def iris(root: Path, download: bool) -> DataBundle:
    """scikit-learn's 150 iris flowers: four float32 measurements (cm), three species."""
    from sklearn.datasets import load_iris

    data = load_iris()
    x = torch.from_numpy(data.data.astype(np.float32))  # (N, 4)
    source = f"scikit-learn load_iris (bundled), fixed stratified {FIXED_TEST_FRACTION:.0%} test split"
    return _fixed_split_bundle(x, data.target, [str(name) for name in data.target_names], source)


# --------------------------------------------------------------------------- MNIST-format IDX files


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file (gzip'd when it ends in .gz) as a uint8 array shaped by its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} cannot be read ({err}); replace it with a fresh copy") from err
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        raise ValueError(f"{path} is not an IDX file of this kind: magic number {found}, expected {magic}")
    n_dims = magic & 0xFF
    header = 4 + 4 * n_dims
    if len(data) < header:
        raise ValueError(f"{path} is truncated: its header is incomplete")
    dims = struct.unpack(f">{n_dims}I", data[4:header])
    if len(data) != header + math.prod(dims):
        raise ValueError(
            f"{path} is truncated or corrupt: its header promises {dims} ({header + math.prod(dims)} bytes) "
            f"but it holds {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_idx_split(images_path: Path, labels_path: Path, n_classes: int) -> Split:
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if len(labels) and labels.max() >= n_classes:
        raise ValueError(f"{labels_path} has label {labels.max()}, expected labels 0..{n_classes - 1}")
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _find_idx_files(folders: list[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first folder holding all of them (unpacked preferred over .gz)."""
    for folder in folders:
        found = {}
        for stem in IDX_FILES:
            candidates = [folder / stem, folder / f"{stem}.gz"]
            found[stem] = next((path for path in candidates if path.is_file()), None)
        if all(found.values()):
            return found
    return None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _idx_data_set(
    root: Path,
    download: bool,
    *,
    title: str,
    folders: tuple[str, ...],
    torchvision_name: str,
    classes: list[str],
) -> DataBundle:
    search = [root, *(root / folder for folder in folders), root / torchvision_name / "raw"]
    files = _find_idx_files(search)
    hint = "or run with download allowed and network"
    if files is None and download:
        import torchvision.datasets

        try:
            # Official mirrors + MD5 checks; stores into root/<torchvision_name>/raw.
            getattr(torchvision.datasets, torchvision_name)(str(root), train=True, download=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            hint = f"the download failed: {_one_line(err)}"
        files = _find_idx_files(search)
    if files is None:
        names = ", ".join(f"{stem}.gz" for stem in IDX_FILES)
        raise FileNotFoundError(f"{title} not found: place {names} in {root / folders[0]} ({hint})")
    train = _read_idx_split(files[IDX_FILES[0]], files[IDX_FILES[1]], len(classes))
    test = _read_idx_split(files[IDX_FILES[2]], files[IDX_FILES[3]], len(classes))
    return DataBundle(train, test, classes, f"{title} IDX files in {files[IDX_FILES[0]].parent}")


@DATASETS.register("mnist")
def mnist(root: Path, download: bool) -> DataBundle:
    """MNIST handwritten digits, 60,000/10,000 uint8 (N, 1, 28, 28)."""
    return _idx_data_set(
        root, download, title="MNIST", folders=("mnist",), torchvision_name="MNIST",
        classes=[str(d) for d in range(10)],
    )  # fmt: skip


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: Path, download: bool) -> DataBundle:
    """Zalando's Fashion-MNIST clothing images, 60,000/10,000 uint8 (N, 1, 28, 28)."""
    return _idx_data_set(
        root, download, title="Fashion-MNIST", folders=("fashion-mnist", "fashion_mnist"),
        torchvision_name="FashionMNIST", classes=list(FASHION_MNIST_CLASSES),
    )  # fmt: skip


# --------------------------------------------------------------------------- CIFAR-10 and CIFAR-100


def _cifar10_batches(root: Path, download: bool) -> DataBundle:
    """The official python-pickle batches via torchvision (which checks their MD5 sums)."""
    from torchvision.datasets import CIFAR10

    splits = []
    for train in (True, False):
        data = CIFAR10(str(root), train=train, download=download)
        x = torch.from_numpy(np.ascontiguousarray(data.data.transpose(0, 3, 1, 2)))  # (N, 32, 32, 3) -> NCHW
        splits.append(Split(x, torch.tensor(data.targets, dtype=torch.int64)))
    source = f"CIFAR-10 (official) from {root / 'cifar-10-batches-py'}"
    return DataBundle(splits[0], splits[1], list(CIFAR10_CLASSES), source)


def _cifar_folder_problem(tree: FileTree, classes: list[str]) -> str | None:
    """Why ``tree`` is not a train/test image-folder copy with ``classes``, or None if it is."""
    for split in ("train", "test"):
        found = sorted(tree.folders(split))
        if found != sorted(classes):
            shown = ", ".join(classes) if len(classes) <= 10 else f"the {len(classes)} classes"
            return f"expected {split}/<class>/ folders for {shown}; found {found or 'none'}"
    return None


def _describe_cifar_copy(title: str, path: Path, tree: FileTree) -> str:
    """Label the copy honestly: a JPEG copy is lossy and scores below the official data."""
    quality = re.search(r"q(\d+)", path.name.lower())
    if "jpeg" in path.name.lower() and quality:
        return f"{title} (JPEG q{quality.group(1)} copy) from {path}"
    extensions = {name.rsplit(".", 1)[-1].lower() for name in tree.files if "." in name}
    if "jpeg" in path.name.lower() or "jpg" in path.name.lower() or extensions & {"jpg", "jpeg"}:
        return f"{title} (image-folder copy, JPEG) from {path}"
    return f"{title} (image-folder copy, {'/'.join(sorted(extensions)).upper()}) from {path}"


def _read_cifar_folder(title: str, classes: list[str], path: Path) -> DataBundle:
    with FileTree(path, unwrap=True) as tree:
        log.info("decoding %s images from %s (once; cached afterwards)", title, path)
        train = read_image_folder(tree, "train", classes=classes)
        test = read_image_folder(tree, "test", classes=classes)
        source = _describe_cifar_copy(title, path, tree)
    return DataBundle(Split(train.x, train.y), Split(test.x, test.y), list(classes), source)


def _has_subfolders(path: Path) -> bool:
    return any(child.is_dir() for child in path.iterdir())


def _cifar_image_folder(root: Path, name: str, title: str, classes: list[str]) -> DataBundle | None:
    """An image-folder copy (``train/<class>/*``, ``test/<class>/*``) in or beside ``root``, or None.

    Looks in ``root/<name>`` (a folder, or .zip files in it), ``root/<name>-jpeg/*.zip``, then
    ``root/*.zip``. The named places must hold this data set; any other zip is only a candidate.
    """
    named = [root / name, *sorted(root.glob(f"{name}/*.zip")), *sorted(root.glob(f"{name}-jpeg/*.zip"))]
    named = [path for path in named if path.is_file() or (path.is_dir() and _has_subfolders(path))]
    others = sorted(path for path in root.glob("*.zip") if path.is_file())
    for path in named + others:
        cache = cache_path(name, path)
        if not cache.is_file():  # a cached copy was checked when it was made
            with FileTree(path, unwrap=True) as tree:
                problem = _cifar_folder_problem(tree, classes)
            if problem is not None and path in named:
                raise ValueError(f"{path} is not an image-folder copy of {title}: {problem}")
            if problem is not None:
                continue
        return cached_bundle(cache, lambda path=path: _read_cifar_folder(title, classes, path))
    return None


def _cifar_not_found(title: str, batches: str, archive: str, root: Path, name: str | None, hint: str) -> str:
    """One line naming the official folder and, when ``name`` is given, the image-folder places."""
    official = f"place the official {batches} folder (from {archive}) in {root}"
    if name is None:
        return f"{title} not found: {official} ({hint})"
    return (
        f"{title} not found: {official}, or an image-folder copy (train/<class>/*.png|jpg and "
        f"test/<class>/*) as {root / name} or as a .zip in {root} ({hint})"
    )


@DATASETS.register("cifar10")
def cifar10(root: Path, download: bool) -> DataBundle:
    """CIFAR-10, 50,000/10,000 uint8 (N, 3, 32, 32), classes in the standard order.

    Looks for ``root/cifar-10-batches-py``, then an image-folder copy:
    ``root/cifar10`` (a folder, or .zip files in it), ``root/cifar10-jpeg/*.zip``, ``root/*.zip``.
    """
    if (root / "cifar-10-batches-py").is_dir():
        try:
            return _cifar10_batches(root, download=False)
        except RuntimeError as err:
            raise ValueError(
                f"{root / 'cifar-10-batches-py'} is incomplete or corrupt ({err}); delete it, download again"
            ) from err
    bundle = _cifar_image_folder(root, "cifar10", "CIFAR-10", CIFAR10_CLASSES)
    if bundle is not None:
        return bundle
    hint = "or run with download allowed and network"
    if download:
        try:
            return _cifar10_batches(root, download=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            hint = f"the download failed: {_one_line(err)}"
    raise FileNotFoundError(
        _cifar_not_found("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz", root, "cifar10", hint)
    )


def _load_cifar_pickle(path: Path) -> dict:
    """One python-pickle file of the CIFAR archives (written by Python 2, hence latin1)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: place train, test and meta (from cifar-100-python.tar.gz) in {path.parent}"
        )
    try:
        with open(path, "rb") as file:
            data = pickle.load(file, encoding="latin1")
    except Exception as err:  # unpickling garbage can raise almost any exception type
        raise ValueError(
            f"{path} is incomplete or corrupt ({_one_line(err)}); delete it, download again"
        ) from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a CIFAR-100 file: it holds a {type(data).__name__}, not a dict")
    return data


def _cifar100_split(path: Path, label_key: str, n_classes: int) -> Split:
    batch = _load_cifar_pickle(path)
    data, labels = np.asarray(batch.get("data")), batch.get(label_key)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != len(data):
        raise ValueError(
            f"{path} is not a CIFAR-100 batch: expected 'data' (N, 3072) and {label_key!r} with N labels"
        )
    y = torch.tensor(labels, dtype=torch.int64)
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < n_classes:
        raise ValueError(f"{path} has {label_key} outside 0..{n_classes - 1}")
    x = torch.from_numpy(data.astype(np.uint8).reshape(-1, 3, 32, 32).copy())  # rows: R, G, B planes of 32x32
    return Split(x, y)


def _cifar100_batches(folder: Path, coarse: bool) -> DataBundle:
    """``folder`` = cifar-100-python: ``train``, ``test`` and ``meta`` (the class names)."""
    kind = "coarse" if coarse else "fine"
    meta = _load_cifar_pickle(folder / "meta")
    classes = meta.get(f"{kind}_label_names")
    if not isinstance(classes, list) or len(classes) != (20 if coarse else 100):
        raise ValueError(f"{folder / 'meta'} has no list of {20 if coarse else 100} {kind}_label_names")
    train = _cifar100_split(folder / "train", f"{kind}_labels", len(classes))
    test = _cifar100_split(folder / "test", f"{kind}_labels", len(classes))
    return DataBundle(
        train, test, [str(name) for name in classes], f"CIFAR-100 (official, {kind}) from {folder}"
    )


def _cifar100(root: Path, download: bool, *, coarse: bool) -> DataBundle:
    folder = root / "cifar-100-python"
    if not folder.is_dir() and not coarse:  # an image-folder copy has the fine classes only
        bundle = _cifar_image_folder(root, "cifar100", "CIFAR-100", CIFAR100_CLASSES)
        if bundle is not None:
            return bundle
    hint = "or run with download allowed and network"
    if not folder.is_dir() and download:
        from torchvision.datasets import CIFAR100

        try:
            CIFAR100(str(root), train=True, download=True)  # official URL + MD5, unpacked into root
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            hint = f"the download failed: {_one_line(err)}"
    if not folder.is_dir():
        title = "CIFAR-100 (coarse labels)" if coarse else "CIFAR-100"
        name = None if coarse else "cifar100"
        raise FileNotFoundError(
            _cifar_not_found(title, "cifar-100-python", "cifar-100-python.tar.gz", root, name, hint)
        )
    return _cifar100_batches(folder, coarse)


@DATASETS.register("cifar100")
def cifar100(root: Path, download: bool) -> DataBundle:
    """CIFAR-100, 50,000/10,000 uint8 (N, 3, 32, 32), the 100 fine classes (names from ``meta``).

    Looks for ``root/cifar-100-python``, then an image-folder copy as for CIFAR-10:
    ``root/cifar100`` (a folder, or .zip files in it), ``root/cifar100-jpeg/*.zip``, ``root/*.zip``.
    """
    return _cifar100(root, download, coarse=False)


@DATASETS.register("cifar100_coarse")
def cifar100_coarse(root: Path, download: bool) -> DataBundle:
    """CIFAR-100 images with the 20 superclass labels; official batches only (``root/cifar-100-python``)."""
    return _cifar100(root, download, coarse=True)


# --------------------------------------------------------------------------- SVHN


def _read_svhn(path: Path) -> Split:
    """One ``*_32x32.mat`` file: X (32, 32, 3, N) uint8 and y (N, 1) with digit 0 labelled 10."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path)
    except (OSError, ValueError, NotImplementedError, MatReadError) as err:
        raise ValueError(f"{path} cannot be read ({_one_line(err)}); replace it with a fresh copy") from err
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise ValueError(f"{path} is not an SVHN 32x32 file: expected X (32, 32, 3, N) and y (N, 1)")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0  # the .mat files give digit 0 the label 10
    if len(labels) and not 0 <= labels.min() <= labels.max() <= 9:
        raise ValueError(f"{path} has labels outside 1..10 (10 = digit 0)")
    images = np.ascontiguousarray(x.astype(np.uint8, copy=False).transpose(3, 2, 0, 1))  # -> (N, 3, 32, 32)
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


@DATASETS.register("svhn")
def svhn(root: Path, download: bool) -> DataBundle:
    """Street View House Numbers (cropped digits), 73,257/26,032 uint8 (N, 3, 32, 32), classes "0".."9".

    Looks for ``train_32x32.mat`` and ``test_32x32.mat`` in ``root/svhn``, then ``root``; the
    ``extra`` split is not used. Local copies are not MD5-checked, downloads are (by torchvision).
    """
    folders = [root / "svhn", root]

    def find() -> Path | None:
        return next((f for f in folders if all((f / name).is_file() for name in SVHN_FILES)), None)

    folder, hint = find(), "or run with download allowed and network"
    if folder is None and download:
        from torchvision.datasets import SVHN

        try:
            for split in ("train", "test"):  # official URLs + MD5, stored in root/svhn
                SVHN(str(root / "svhn"), split=split, download=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            hint = f"the download failed: {_one_line(err)}"
        folder = find()
    if folder is None:
        raise FileNotFoundError(
            f"SVHN not found: place {' and '.join(SVHN_FILES)} (from "
            f"http://ufldl.stanford.edu/housenumbers/) in {root / 'svhn'} ({hint})"
        )
    train, test = (_read_svhn(folder / name) for name in SVHN_FILES)
    return DataBundle(train, test, [str(d) for d in range(10)], f"SVHN (official .mat files) from {folder}")


# --------------------------------------------------------------------------- CelebA


def _celeba_lists(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(image file names, Male label 0/1, partition 0/1/2) from the two official text files."""
    attr_path, partition_path = (folder / name for name in CELEBA_LISTS)
    lines = attr_path.read_text().splitlines()
    names = lines[1].split() if len(lines) > 1 else []
    if not lines or not lines[0].strip().isdigit() or "Male" not in names:
        raise ValueError(
            f"{attr_path} is not a CelebA attribute list: expected a count, then names incl. Male"
        )
    column = 1 + names.index("Male")
    files, male = [], []
    for number, line in enumerate(lines[2 : 2 + int(lines[0])], start=3):
        fields = line.split()
        if len(fields) != 1 + len(names) or fields[column] not in ("1", "-1"):
            raise ValueError(f"{attr_path} line {number} is not '<file> ' + {len(names)} values of 1 or -1")
        files.append(fields[0])
        male.append(fields[column] == "1")
    partition = {}
    for number, line in enumerate(partition_path.read_text().splitlines(), start=1):
        fields = line.split()
        if fields and (len(fields) != 2 or fields[1] not in ("0", "1", "2")):
            raise ValueError(f"{partition_path} line {number} is not '<file> 0|1|2'")
        if fields:
            partition[fields[0]] = int(fields[1])
    unlisted = [file for file in files if file not in partition]
    if unlisted:
        raise ValueError(
            f"{partition_path} does not list {len(unlisted)} images of {attr_path}, e.g. {unlisted[0]}"
        )
    split = np.array([partition[file] for file in files], dtype=np.int64)
    return files, np.array(male, dtype=np.int64), split


def _celeba_images(folder: Path) -> Path | None:
    """The aligned images: the ``img_align_celeba`` folder, else its .zip (as downloaded)."""
    for candidate in (folder / "img_align_celeba", folder / "img_align_celeba.zip"):
        if candidate.is_dir() or candidate.is_file():
            return candidate
    return None


def _decode_celeba(tree: FileTree, files: list[str], size: int) -> torch.Tensor:
    """Decode in chunks (a full-size 178x218 chunk is 116 kB an image), centre-crop square, resize."""
    from torchvision.transforms.v2.functional import center_crop, resize

    images = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(files), 512):
        chunk, _ = decode_images(tree, files[start : start + 512])  # (n, 3, H, W)
        side = min(chunk.shape[2:])
        images[start : start + len(chunk)] = resize(
            center_crop(chunk, [side, side]), [size, size], antialias=True
        )
    return images


def _read_celeba(folder: Path, images_path: Path) -> DataBundle:
    files, male, partition = _celeba_lists(folder)
    with FileTree(images_path) as tree:
        by_name = {name.rsplit("/", 1)[-1]: name for name in tree.files}  # the .zip wraps them in a folder
        missing = [file for file in files if file not in by_name]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images listed in {folder / CELEBA_LISTS[0]} are missing from {images_path}, "
                f"e.g. {missing[0]}"
            )
        log.info("decoding %d CelebA images from %s (once; cached afterwards)", len(files), images_path)
        x = _decode_celeba(tree, [by_name[file] for file in files], CELEBA_SIZE)
    y = torch.from_numpy(male)
    test = torch.from_numpy(partition == 2)  # 0 train and 1 valid both train: the loop holds out its own
    source = f"CelebA aligned, Male attribute, centre-cropped to {CELEBA_SIZE}x{CELEBA_SIZE}, from {folder}"
    return DataBundle(Split(x[~test], y[~test]), Split(x[test], y[test]), list(CELEBA_CLASSES), source)


@DATASETS.register("celeba_gender")
def celeba_gender(root: Path, download: bool) -> DataBundle:
    """CelebA aligned faces labelled by the Male attribute, 182,637/19,962 uint8 (N, 3, 64, 64).

    The official partition: train and valid (0, 1) form the training split, test (2) the test
    split. Each 178x218 image is centre-cropped to 178x178 and resized to 64x64 (the DCGAN
    convention), once; the result is cached. Looks in ``root/celeba`` (torchvision's layout),
    then ``root``.
    """
    folders = [root / "celeba", root]

    def find() -> tuple[Path, Path] | None:
        for folder in folders:
            images = _celeba_images(folder)
            if images is not None and all((folder / name).is_file() for name in CELEBA_LISTS):
                return folder, images
        return None

    found, hint = find(), "or run with download allowed and network"
    if found is None and download:
        from torchvision.datasets import CelebA

        try:  # Google Drive via gdown (an extra install), MD5-checked, unpacked into root/celeba
            CelebA(str(root), split="all", download=True)
        except Exception as err:  # gdown raises its own types (quota exceeded, no such file...)
            hint = f"the download failed: {_one_line(err)}"
        found = find()
    if found is None:
        raise FileNotFoundError(
            f"CelebA not found: place img_align_celeba/ (or img_align_celeba.zip), "
            f"{' and '.join(CELEBA_LISTS)} in {root / 'celeba'} ({hint})"
        )
    folder, images = found
    cache = cache_path(f"celeba_gender-{CELEBA_SIZE}", folder)  # changes with the lists and the images
    return cached_bundle(cache, lambda: _read_celeba(folder, images))


# --------------------------------------------------------------------------- Quick, Draw!


def _quickdraw_url(name: str) -> str:
    return QUICKDRAW_URL.format(urllib.parse.quote(name))


def _quickdraw_files(folder: Path) -> dict[str, Path]:
    """{class: file} for ``<class>.npy``, ``full_numpy_bitmap_<class>.npy`` and raw ``<class>[count].bin``."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".npy":
            name = path.stem.removeprefix("full_numpy_bitmap_")
        elif path.suffix == ".bin":
            name = re.sub(r"\d+$", "", path.stem)  # cats1000.bin holds the class "cats"
        else:
            continue
        if name in found:
            raise ValueError(f"{found[name]} and {path} both hold the Quick, Draw! class {name!r}; keep one")
        found[name] = path
    return found


def _read_quickdraw(path: Path) -> np.ndarray:
    """One class's drawings as uint8 (N, 28, 28), 0 = background."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(
                f"{path} cannot be read ({_one_line(err)}); replace it with a fresh copy"
            ) from err
        if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != QUICKDRAW_PIXELS:
            raise ValueError(
                f"{path} is not a Quick, Draw! bitmap file: expected uint8 (N, 784), found {array.dtype} "
                f"{array.shape}"
            )
    else:
        data = path.read_bytes()
        if len(data) % QUICKDRAW_PIXELS:
            raise ValueError(
                f"{path} holds {len(data)} bytes, not a whole number of 784-byte (28x28) drawings"
            )
        array = np.frombuffer(data, dtype=np.uint8).reshape(-1, QUICKDRAW_PIXELS)
    if len(array) == 0:
        raise ValueError(f"{path} holds no drawings")
    return array.reshape(-1, 28, 28)


@DATASETS.register("quickdraw")
def quickdraw(root: Path, download: bool) -> DataBundle:
    """Quick, Draw! doodles, uint8 (N, 1, 28, 28), one file per class in ``root/quickdraw``.

    The classes are the files present, sorted, unless ``root/quickdraw/classes.txt`` names them
    (one a line, in label order): then only those are read, and missing ones are downloaded from
    Google's bucket when allowed. There is no official test split: a fixed stratified 20% is held out.
    """
    folder = root / "quickdraw"
    listing = folder / "classes.txt"
    files = _quickdraw_files(folder)
    if listing.is_file():
        classes = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    else:
        classes = sorted(files)
    if not classes:
        raise FileNotFoundError(
            f"Quick, Draw! not found: place <class>.npy files (from {QUICKDRAW_URL.format('<class>')}) or "
            f"raw <class>.bin files (784 bytes a drawing) in {folder}, or list classes to fetch in {listing}"
        )
    if len(set(classes)) != len(classes):
        raise ValueError(f"{listing} names a class twice: {classes}")
    hint = "or run with download allowed and network"
    missing = [name for name in classes if name not in files]
    if missing and download:
        from torchvision.datasets.utils import download_url

        try:
            for name in missing:  # Google publishes no checksums for these files
                download_url(_quickdraw_url(name), str(folder), f"{name}.npy")
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            hint = f"the download failed: {_one_line(err)}"
        files = _quickdraw_files(folder)
        missing = [name for name in classes if name not in files]
    if missing:
        urls = ", ".join(_quickdraw_url(name) for name in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"Quick, Draw! classes {missing} not found in {folder}: fetch {urls} into it ({hint})"
        )
    arrays = [_read_quickdraw(files[name]) for name in classes]
    x = torch.from_numpy(np.concatenate(arrays)).unsqueeze(1)  # (N, 1, 28, 28)
    y = np.repeat(np.arange(len(classes)), [len(array) for array in arrays])
    source = f"Quick, Draw! bitmaps in {folder}, fixed stratified {FIXED_TEST_FRACTION:.0%} test split"
    return _fixed_split_bundle(x, y, classes, source)
