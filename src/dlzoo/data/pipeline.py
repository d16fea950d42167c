"""Entry points of the data layer: ``load_data`` finds and loads a data set,
``build_loaders`` splits it and wraps each split in a whole-batch loader, and
``eval_loader`` wraps one split for evaluation outside training."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlzoo.config import DataConfig
from dlzoo.data import captcha, sources  # noqa: F401  (registers the data sets)
from dlzoo.data.core import DataBundle, Split, resolve_data_dir
from dlzoo.data.loader import BatchLoader, Normalizer, select_classes, split_train_val
from dlzoo.registry import DATASETS

IMPORTED_PREFIX = "imported:"


def load_data(cfg: DataConfig) -> DataBundle:
    """The data set named by ``cfg`` with its class selection applied, images at their stored size.

    ``imported:<name>`` reads a set made with ``dlzoo data import``. ``data.resize`` is not
    applied here but by the loaders, batch by batch (``build_loaders``, ``eval_loader``).
    """
    root = resolve_data_dir(cfg.data_dir)
    if cfg.name.startswith(IMPORTED_PREFIX):
        from dlzoo.data.importer import load_imported

        bundle = load_imported(cfg.name.removeprefix(IMPORTED_PREFIX), root)
    else:
        bundle = DATASETS.get(cfg.name)(root, cfg.download)
    if cfg.classes:
        try:
            bundle = select_classes(bundle, cfg.classes)
        except ValueError as error:
            raise ValueError(f"data.classes={cfg.classes}: {error}") from None
    if cfg.resize and not bundle.train.is_image:
        raise ValueError(f"data.resize={cfg.resize} applies to images only, but this data set is tabular")
    for split_name, split in (("training", bundle.train), ("test", bundle.test)):
        if len(split) == 0:
            raise ValueError(f"data set {cfg.name!r} has an empty {split_name} split: nothing to learn from")
    return bundle


@dataclass
class Loaders:
    train: BatchLoader
    val: BatchLoader | None
    test: BatchLoader
    normalizer: Normalizer


def build_loaders(
    cfg: DataConfig, bundle: DataBundle, seed: int, device: torch.device, shard: tuple[int, int] = (0, 1)
) -> Loaders:
    """Hold out validation from train, fit the normaliser on what remains, batch all three.

    ``shard=(rank, world_size)``: data-parallel training; the training and validation loaders
    give this process its part of every batch (the training loader drops an epoch's last,
    incomplete batch, so every process steps on an equal part), the test loader the whole split.
    """
    train, val = split_train_val(bundle.train, cfg.val_fraction, seed)
    if 0 < cfg.train_subset < len(train):  # a seeded, stratified subset, not the first N
        _, train = split_train_val(train, cfg.train_subset / len(train), seed)
    normalizer = Normalizer.fit(train.x, cfg.normalize, cfg.resize)
    augment = cfg.augment if cfg.augment.enabled else None
    return Loaders(
        train=BatchLoader(
            train,
            cfg.batch_size,
            normalizer,
            shuffle=True,
            augment=augment,
            seed=seed,
            device=device,
            drop_last=shard[1] > 1,
            shard=shard,
            resize=cfg.resize,
            progressive_sizes=cfg.progressive_sizes,
        ),
        val=eval_loader(cfg, val, normalizer, device, shard) if len(val) else None,
        test=eval_loader(cfg, bundle.test, normalizer, device),
        normalizer=normalizer,
    )


def eval_loader(
    cfg: DataConfig,
    split: Split,
    normalizer: Normalizer,
    device: torch.device | str = "cpu",
    shard: tuple[int, int] = (0, 1),
) -> BatchLoader:
    """``split`` in evaluation batches (``data.eval_batch_size``, stored order, no augmentation),
    resized as the model was trained (``data.resize``)."""
    return BatchLoader(split, cfg.eval_batch_size, normalizer, device=device, shard=shard, resize=cfg.resize)
