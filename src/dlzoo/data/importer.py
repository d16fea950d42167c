"""Make your own data set: import a folder or .zip of images once, then train on it by name.

Three layouts are understood (a single wrapping folder, as zipping a folder
makes, is looked through):

- ``train/<class>/*`` and ``test/<class>/*``: the splits are kept;
- ``<class>/*``: a stratified, seeded ``test_fraction`` test split is made;
- any images plus a labels file of ``relative/path label`` lines (label: a class
  name, or a class index when every label is an integer); a split is made too.

Images of any size and mode become uint8 RGB (or grayscale) tensors, resized
to ``size`` x ``size`` when asked. The result is one file,
``<data_dir>/imported/<name>.pt``, that :func:`load_imported` reads back
without unpickling code (``weights_only=True``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from dlzoo.data.core import DataBundle, Split
from dlzoo.data.sources import (
    FileTree,
    bundle_from_dict,
    bundle_to_dict,
    decode_images,
    read_image_folder,
    save_atomic,
    stratified_split,
)

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]+")
# "relative/path label" or "relative/path,label"; the path may hold spaces, the label may not.
_LABEL_LINE = re.compile(r"(?P<path>.+?)\s*[,\s]\s*(?P<label>[^,\s]+)")


def imported_path(name: str, data_dir: Path) -> Path:
    """Where the import called ``name`` lives: ``data_dir/imported/<name>.pt``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad import name {name!r}: use letters, digits, '_' and '-' only (e.g. 'my_pets')")
    return data_dir / "imported" / f"{name}.pt"


def _read_labels_file(labels_file: Path, tree: FileTree) -> tuple[list[str], list[int], list[str]]:
    """(image paths, label indices, class names) from ``relative/path label`` lines."""
    if not labels_file.is_file():
        raise FileNotFoundError(f"labels file {labels_file} does not exist")
    known = set(tree.files)
    paths: list[str] = []
    texts: list[str] = []  # each line's label, as written
    try:
        lines = labels_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{labels_file} is not UTF-8 text ({err}); save it as UTF-8") from err
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LABEL_LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"{labels_file}:{number}: expected 'relative/path label', got {line!r}")
        path = match["path"].strip().removeprefix("./")
        if path not in known:
            raise ValueError(f"{labels_file}:{number}: no file {path!r} in {tree.path}")
        paths.append(path)
        texts.append(match["label"])
    if all(text.isascii() and text.isdigit() for text in texts):
        labels = [int(text) for text in texts]  # class indices
        classes = [str(index) for index in range(max(labels, default=-1) + 1)]
    else:
        classes = sorted(set(texts))
        index_of = {name: index for index, name in enumerate(classes)}
        labels = [index_of[text] for text in texts]
    return paths, labels, classes


def _split_made(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int) -> tuple[Split, Split]:
    train_idx, test_idx = stratified_split(y.numpy(), test_fraction, seed)
    if len(test_idx) == 0:
        raise ValueError(
            f"{len(y)} images are too few to hold out test_fraction={test_fraction} of each class; add images"
        )
    train_t, test_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return Split(x[train_t], y[train_t]), Split(x[test_t], y[test_t])


def _skipped_note(n_skipped: int, source: Path) -> str:
    if not n_skipped:
        return ""
    log.warning("skipped %d unreadable files in %s", n_skipped, source)
    return f"; {n_skipped} unreadable file{'s' if n_skipped > 1 else ''} skipped"


def _from_labels_file(
    tree: FileTree, labels_file: Path, options: dict, test_fraction: float, seed: int
) -> DataBundle:
    files, labels, classes = _read_labels_file(labels_file, tree)
    if not files:
        raise ValueError(f"no images found in {tree.path}: {labels_file} lists none")
    x, kept = decode_images(tree, files, **options)
    y = torch.tensor([labels[index] for index in kept], dtype=torch.int64)
    train, test = _split_made(x, y, test_fraction, seed)
    layout = f"labels from {labels_file}, stratified {test_fraction:.0%} test split, seed {seed}"
    return DataBundle(train, test, classes, layout + _skipped_note(len(files) - len(kept), tree.path))


def _from_folders(tree: FileTree, options: dict, test_fraction: float, seed: int) -> DataBundle:
    top = tree.folders()
    if not top:
        raise ValueError(f"no images found in {tree.path}: expected <class>/<image> folders")
    if "train" in top and "test" in top:
        classes = sorted(set(tree.folders("train")) | set(tree.folders("test")))
        train, test = (
            read_image_folder(tree, split, classes=classes, **options) for split in ("train", "test")
        )
        if train.x.shape[1:] != test.x.shape[1:]:
            raise ValueError(
                f"train images are {tuple(train.x.shape[1:])} (C, H, W) but test images are "
                f"{tuple(test.x.shape[1:])}; pass size=N (--size N) to resize every image to NxN"
            )
        note = _skipped_note(len(train.skipped) + len(test.skipped), tree.path)
        return DataBundle(
            Split(train.x, train.y), Split(test.x, test.y), classes, "train/test folders kept" + note
        )
    if "train" in top or "test" in top:
        present, absent = ("train", "test") if "train" in top else ("test", "train")
        raise ValueError(
            f"{tree.path} has a {present}/ folder but no {absent}/: give both train/<class>/ and "
            "test/<class>/ folders, or only <class>/ folders (a test split is then made)"
        )
    folder = read_image_folder(tree, **options)
    train, test = _split_made(folder.x, folder.y, test_fraction, seed)
    layout = f"class folders, stratified {test_fraction:.0%} test split, seed {seed}"
    return DataBundle(train, test, folder.classes, layout + _skipped_note(len(folder.skipped), tree.path))


def import_images(
    source: Path,
    name: str,
    data_dir: Path,
    *,
    labels_file: Path | None = None,
    size: int | None = None,
    grayscale: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Read the images in ``source`` (a folder or .zip) and save them as the data set ``name``.

    Returns the written file, ``data_dir/imported/<name>.pt``. Nothing is
    written when anything is wrong. ``skip_bad`` leaves out files that are not
    readable images (their count goes into the saved ``source`` text) instead
    of stopping at the first one. ``test_fraction`` and ``seed`` only matter
    when the test split is made here.
    """
    source, target = Path(source), imported_path(name, data_dir)
    if target.exists() and not overwrite:
        raise ValueError(
            f"an import called {name!r} already exists ({target}); pass --overwrite to replace it"
        )
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist: give a folder or .zip of images")
    options = {"size": size, "grayscale": grayscale, "skip_bad": skip_bad}
    with FileTree(source, unwrap=labels_file is None) as tree:
        if not tree.files:
            raise ValueError(f"no images found in {source}")
        if labels_file is not None:
            bundle = _from_labels_file(tree, Path(labels_file), options, test_fraction, seed)
        else:
            bundle = _from_folders(tree, options, test_fraction, seed)
    bundle.source = f"images imported from {source.resolve()} ({bundle.source})"
    save_atomic(bundle_to_dict(bundle), target)
    return target


def load_imported(name: str, data_dir: Path) -> DataBundle:
    """The data set saved by :func:`import_images` under ``name``."""
    path = imported_path(name, data_dir)
    if not path.is_file():
        existing = sorted(found.stem for found in path.parent.glob("*.pt"))
        listed = ", ".join(existing) if existing else "none yet"
        raise FileNotFoundError(
            f"no imported data set {name!r} in {path.parent} (imports there: {listed}); "
            "make one with import_images (dlzoo import)"
        )
    return bundle_from_dict(torch.load(path, weights_only=True), path)
