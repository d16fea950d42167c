"""From in-memory splits to model-ready batches: normalisation, splitting, class selection, batching.

A ``BatchLoader`` holds a whole split as tensors on its device, at the size
they were stored, and cuts batches with a precomputed permutation. Image
batches go uint8 -> resize (``data.resize``) -> float in [0, 1] -> whole-batch
augmentation -> normalisation; tabular batches are only normalised. The
shuffle order of an epoch and every augmentation draw are pure functions of
(seed, epoch, batch index), so a run resumed at any batch sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from dlzoo.config import NORMALIZE_CHOICES, AugmentConfig
from dlzoo.data.augment import alternating_flips, augment_batch, first_flips
from dlzoo.data.core import DataBundle, Split
from dlzoo.registry import unknown_name_message

_FIT_CHUNK = 1024
"""Images per chunk when fitting statistics (bounds the float64 working copy: 8 MB per channel
at 32x32, 34 MB at 64x64)."""


def resize_batch(x: Tensor, size: int) -> Tensor:
    """Images (B, C, H, W) resized to ``size`` x ``size``: bilinear, antialiased, in their own
    dtype (uint8 stays uint8, rounded); ``size`` 0 returns them unchanged.

    Each image is resized on its own: an image's pixels do not depend on the batch it is in,
    so resizing batch by batch gives what resizing the whole split at once would.
    """
    if not size:
        return x
    from torchvision.transforms.v2.functional import resize

    return resize(x, [size, size], antialias=True)


def _to_unit_float(x: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [0, 1]; float images are taken to be in [0, 1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class Normalizer:
    """Maps a batch in [0, 1] (images) or raw float features (tabular) to the model's float32 input.

    Images (``kind="image"``), mode ``standard``: (x - mean[c]) / std[c] with
    per-channel statistics of the training split in [0, 1] units; ``unit``:
    unchanged; ``none``: x * 255, the raw pixel values. Tabular
    (``kind="tabular"``), mode ``standard``: per-feature (x - mean) / std;
    ``unit`` and ``none``: unchanged.
    """

    def __init__(self, mode: str, kind: str, mean: list[float], std: list[float]) -> None:
        if mode not in NORMALIZE_CHOICES:
            raise ValueError(unknown_name_message("normalize mode", mode, list(NORMALIZE_CHOICES)))
        if kind not in ("image", "tabular"):
            raise ValueError(unknown_name_message("normalizer kind", kind, ["image", "tabular"]))
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} entries but std has {len(std)}")
        if mode == "standard" and not mean:
            raise ValueError("a 'standard' normalizer needs mean and std; build it with Normalizer.fit")
        self.mode = mode
        self.kind = kind
        self.mean = [float(m) for m in mean]
        self.std = [float(s) if s > 0 else 1.0 for s in std]  # a constant channel or feature: leave unscaled
        self._stats_on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @classmethod
    def fit(cls, train_x: Tensor, mode: str, resize: int = 0) -> Normalizer:
        """Fit on the training features: uint8 or [0, 1] float images (N, C, H, W), or float (N, D).

        ``resize``: fit on the images as the loader resizes them (``data.resize``), chunk by
        chunk. Not the stored images: upscaling smooths them, which lowers
        the per-channel std.
        """
        kind = "image" if train_x.dim() == 4 else "tabular"
        if mode != "standard":
            return cls(mode, kind, [], [])
        if len(train_x) == 0:
            raise ValueError("cannot fit a 'standard' normalizer: the training split has no examples")
        mean, std = _image_stats(train_x, resize) if kind == "image" else _feature_stats(train_x)
        return cls(mode, kind, mean.tolist(), std.tolist())

    def _stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._stats_on:
            shape = (1, -1, 1, 1) if self.kind == "image" else (1, -1)
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(shape)
            std = torch.tensor(self.std, dtype=torch.float32, device=device).view(shape)
            self._stats_on[device] = (mean, std)
        return self._stats_on[device]

    def __call__(self, x01: Tensor) -> Tensor:
        if self.mode == "standard":
            mean, std = self._stats(x01.device)
            return (x01 - mean) / std
        if self.mode == "none" and self.kind == "image":
            return x01 * 255.0
        return x01

    def inverse(self, x: Tensor) -> Tensor:
        """Undo ``__call__``: model input -> [0, 1] images or raw features (for plots and samples)."""
        if self.mode == "standard":
            mean, std = self._stats(x.device)
            return x * std + mean
        if self.mode == "none" and self.kind == "image":
            return x / 255.0
        return x

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form, for a run folder."""
        return {"mode": self.mode, "kind": self.kind, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        return cls(data["mode"], data["kind"], list(data["mean"]), list(data["std"]))

    def __repr__(self) -> str:
        return f"Normalizer(mode={self.mode!r}, kind={self.kind!r}, mean={self.mean}, std={self.std})"


def _image_stats(x: Tensor, resize: int = 0) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std in [0, 1] units, accumulated in float64 over chunks of images,
    each chunk first resized to ``resize`` x ``resize`` when that is set."""
    channels = x.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0  # pixels per channel
    for start in range(0, len(x), _FIT_CHUNK):
        chunk = resize_batch(x[start : start + _FIT_CHUNK], resize).to("cpu", torch.float64)
        if x.dtype == torch.uint8:
            chunk /= 255.0
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
        count += chunk.numel() // channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean, std


def _feature_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and (population) std of a float (N, D) matrix."""
    x = x.to("cpu", torch.float64)
    return x.mean(dim=0), x.std(dim=0, unbiased=False)


def _is_class_labels(y: Tensor) -> bool:
    return y.dtype == torch.int64 and y.dim() == 1


def _take(split: Split, index: Tensor) -> Split:
    return Split(split.x[index], split.y[index])


def _empty_like(split: Split) -> Split:
    return Split(split.x[:0], split.y[:0])


def _stratified_val_counts(class_counts: Tensor, n_val: int) -> Tensor:
    """Validation examples per class: each within one of its exact share, summing to ``n_val``.

    Largest-remainder rounding: floor every class's share, then give the
    leftover examples to the classes with the largest fractional parts.
    """
    exact = class_counts.double() * (n_val / class_counts.sum().item())
    counts = exact.floor().long()
    leftover = n_val - int(counts.sum())
    order = torch.argsort(exact - counts, descending=True, stable=True)
    counts[order[:leftover]] += 1
    return counts


def split_train_val(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out ``val_fraction`` of ``split`` for validation, seeded and stratified by class.

    With int64 class labels every class gives (within one example) the same
    fraction; other targets (regression) are split at random. Both parts keep
    the original order of their examples. ``val_fraction == 0`` returns the
    split itself and an empty validation split with the same trailing shape.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(len(split) * val_fraction)
    if n_val == 0:
        return split, _empty_like(split)
    generator = torch.Generator().manual_seed(seed)
    y = split.y.cpu()
    shuffled = torch.randperm(len(split), generator=generator)
    if _is_class_labels(y):
        # Group the shuffled indices by class (stable sort keeps the random order within a class),
        # rank each example inside its class, and send the first count[class] of each to validation.
        grouped = shuffled[torch.argsort(y[shuffled], stable=True)]
        labels = y[grouped]
        class_counts = torch.bincount(labels)
        class_start = torch.cumsum(class_counts, 0) - class_counts
        rank_in_class = torch.arange(len(grouped)) - class_start[labels]
        to_val = rank_in_class < _stratified_val_counts(class_counts, n_val)[labels]
        val_index, train_index = grouped[to_val], grouped[~to_val]
    else:
        val_index, train_index = shuffled[:n_val], shuffled[n_val:]
    return _take(split, train_index.sort().values), _take(split, val_index.sort().values)


def select_classes(bundle: DataBundle, classes: list[int]) -> DataBundle:
    """Keep only the labels in ``classes``, relabelled 0..k-1 in the given order; empty = keep all."""
    if not classes:
        return bundle
    num_classes = len(bundle.classes)
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(
            f"class index {bad[0]} is out of range for {num_classes} classes: valid indices are "
            f"0..{num_classes - 1} ({', '.join(bundle.classes)})"
        )
    if len(set(classes)) != len(classes):
        raise ValueError(f"class indices must be distinct, got {classes}")
    if not _is_class_labels(bundle.train.y):
        raise ValueError("select_classes needs int64 class labels; this data set's targets are not classes")
    new_label = torch.full((num_classes,), -1, dtype=torch.int64)
    new_label[torch.tensor(classes)] = torch.arange(len(classes))

    def keep(split: Split) -> Split:
        relabelled = new_label.to(split.y.device)[split.y]
        kept = relabelled >= 0
        return Split(split.x[kept], relabelled[kept])

    return DataBundle(
        train=keep(bundle.train),
        test=keep(bundle.test),
        classes=[bundle.classes[c] for c in classes],
        source=f"{bundle.source}, classes {classes}",
    )


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers, the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class BatchLoader:
    """Batches of one in-memory split, normalised (and augmented) on ``device``.

    Call ``set_epoch(epoch)`` before each epoch: the shuffle order is seeded
    by (seed, epoch) and the augmentation of batch i by (seed, epoch, i), so
    iterating twice over the same epoch gives the same batches, and
    ``set_epoch(epoch, start_batch=k)`` resumes an epoch at batch k.
    Iteration yields ``(x, y)``: x float32 and model-ready, y as stored.
    Integer non-image features (token ids) are passed through unchanged.

    ``resize=N`` resizes each image batch to NxN as it is cut, before augmentation (so crops
    and padding are in pixels of the resized image): the split stays in memory at its stored
    size, not as a second, larger copy (CIFAR-10 at 64x64 would be 737 MB).

    ``progressive_sizes=[16, 24]`` (progressive resizing) scales each batch of epoch 0 to 16x16
    and of epoch 1 to 24x24 after augmentation, and later epochs keep the full size: cheap, coarse
    early epochs, then the size the model is tested at. ``example_shape`` stays the full size.

    ``shard=(rank, world_size)`` (data-parallel training) yields only rank's part of each
    batch: the batches are the ones a single process would see, cut into ``world_size``
    contiguous parts of (nearly) equal size; a part may be empty only for a last, small
    batch. Augmentation is drawn for the whole batch before it is cut, so the parts together
    are exactly the single-process batch.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        normalizer: Normalizer,
        *,
        shuffle: bool = False,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
        resize: int = 0,
        progressive_sizes: Sequence[int] = (),
    ) -> None:
        if len(split) == 0:
            raise ValueError(
                "the split has no examples: check the data set files, data.classes and data.val_fraction"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and len(split) < batch_size:
            raise ValueError(
                f"drop_last with batch_size {batch_size} leaves no batches from {len(split)} examples; "
                "use a smaller batch size"
            )
        augment = augment if augment is not None and augment.enabled else None
        if augment is not None and not split.is_image:
            raise ValueError("data.augment applies to images only, but this split holds tabular features")
        for name, value in (("resize", resize), ("progressive_sizes", list(progressive_sizes))):
            if value and not split.is_image:
                raise ValueError(
                    f"data.{name}={value} applies to images only, but this split holds tabular features"
                )
        self.device = torch.device(device)
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        self.is_image = split.is_image
        self.batch_size = batch_size
        self.normalizer = normalizer
        self.shuffle = shuffle
        self.augment = augment
        self.resize = resize
        self.progressive_sizes = list(progressive_sizes)
        self.seed = seed
        self.drop_last = drop_last
        self.rank, self.world_size = shard
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
        self.epoch = 0
        self.start_batch = 0
        # alternate_flip: each example's epoch-0 flip, drawn once from (seed, -1), a seed no epoch uses;
        # epoch e's flips follow from it, so they too are a pure function of (seed, epoch, example).
        self.first_flips: Tensor | None = None
        if augment is not None and augment.alternate_flip:
            generator = torch.Generator().manual_seed(mix_seed(seed, -1))
            self.first_flips = first_flips(len(self.y), generator).to(self.device)

    @property
    def num_examples(self) -> int:
        return len(self.y)

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one example as the model gets it: (C, H, W) after any resize, or (D,)."""
        if self.resize:
            return (*self.x.shape[1:-2], self.resize, self.resize)
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        """Number of batches in a full epoch."""
        if self.drop_last:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch whose order and draws the next iterations use, starting at ``start_batch``."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        self.epoch = epoch
        self.start_batch = start_batch

    def _epoch_order(self) -> Tensor | None:
        """This epoch's permutation of example indices on the device, or None for the stored order."""
        if not self.shuffle:
            return None
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return torch.randperm(self.num_examples, generator=generator).to(self.device)

    def _model_input(self, x: Tensor, batch_index: int, rows: slice | Tensor) -> Tensor:
        if self.is_image:
            x = _to_unit_float(resize_batch(x, self.resize))  # resized as uint8, as fit and predict resize
            if self.augment is not None:
                generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, batch_index))
                flips = None
                if self.first_flips is not None:  # alternate_flip: the batch's images mirrored this epoch
                    flips = alternating_flips(self.first_flips[rows], self.epoch)
                x = augment_batch(x, self.augment, generator, flips)
            if self.epoch < len(self.progressive_sizes):
                x = resize_batch(x, self.progressive_sizes[self.epoch])
        elif not x.is_floating_point():
            return x
        return self.normalizer(x.float())

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._epoch_order()
        for batch_index in range(self.start_batch, len(self)):
            start = batch_index * self.batch_size
            stop = start + self.batch_size
            rows = slice(start, stop) if order is None else order[start:stop]
            if self.world_size == 1:
                yield self._model_input(self.x[rows], batch_index, rows), self.y[rows]
                continue
            size = len(self.y[rows])
            part = slice(size * self.rank // self.world_size, size * (self.rank + 1) // self.world_size)
            if part.start == part.stop:
                continue
            if self.augment is not None:  # the draws are the whole batch's: augment it, then cut
                yield self._model_input(self.x[rows], batch_index, rows)[part], self.y[rows][part]
            else:
                mine = slice(start + part.start, start + part.stop) if order is None else rows[part]
                yield self._model_input(self.x[mine], batch_index, mine), self.y[mine]
