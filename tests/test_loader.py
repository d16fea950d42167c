"""Normalisation, train/val splitting, class selection and reproducible batching."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import Tensor

from dlzoo.config import AugmentConfig, DataConfig
from dlzoo.data import loader
from dlzoo.data.core import DataBundle, Split
from dlzoo.data.loader import BatchLoader, Normalizer, select_classes, split_train_val
from dlzoo.data.pipeline import build_loaders, load_data


def image_split(n: int = 100, num_classes: int = 4, seed: int = 0, size: int = 8) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    x[:, 1] //= 2  # channels with different statistics
    y = torch.arange(n) % num_classes
    return Split(x, y)


def tabular_split(n: int = 50) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g) * torch.tensor([1.0, 10.0, 0.1, 0.0]) + torch.tensor([5.0, -3.0, 0, 7])
    return Split(x, torch.randn(n, generator=g))


# --- Normalizer -----------------------------------------------------------------------------------


def test_standard_normalizer_gives_zero_mean_unit_std_per_channel() -> None:
    split = image_split(n=3000)  # more than one fitting chunk
    normalizer = Normalizer.fit(split.x, "standard")
    z = normalizer(split.x.float() / 255)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    assert normalizer.mean[1] < normalizer.mean[0] / 1.5  # the halved channel has its own statistics


def test_standard_normalizer_on_tabular_features_guards_constant_columns() -> None:
    split = tabular_split()
    normalizer = Normalizer.fit(split.x, "standard")
    z = normalizer(split.x)
    torch.testing.assert_close(z[:, :3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :3].std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    assert normalizer.std[3] == 1.0 and torch.allclose(z[:, 3], torch.zeros(50))


def test_normalizer_round_trips_through_json() -> None:
    normalizer = Normalizer.fit(image_split().x, "standard")
    rebuilt = Normalizer.from_dict(json.loads(json.dumps(normalizer.to_dict())))
    batch = torch.rand(5, 3, 8, 8)
    assert torch.equal(rebuilt(batch), normalizer(batch))
    torch.testing.assert_close(normalizer.inverse(normalizer(batch)), batch)


def test_normalizer_none_gives_raw_pixels_and_unit_gives_unit_range() -> None:
    x = image_split().x
    raw = Normalizer.fit(x, "none")(x.float() / 255)
    torch.testing.assert_close(raw, x.float(), atol=1e-4, rtol=0)
    assert torch.equal(Normalizer.fit(x, "unit")(x.float() / 255), x.float() / 255)


def test_normalizer_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="standard"):
        Normalizer.fit(image_split().x, "zscore")


# --- split_train_val ------------------------------------------------------------------------------


def test_split_train_val_is_stratified_disjoint_and_complete() -> None:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate([50, 31, 17, 2])])
    x = torch.arange(len(y), dtype=torch.float32)[:, None]  # each row remembers its index
    train, val = split_train_val(Split(x, y), 0.2, seed=3)
    train_rows, val_rows = train.x[:, 0].long(), val.x[:, 0].long()
    assert len(set(train_rows.tolist()) & set(val_rows.tolist())) == 0
    assert sorted(train_rows.tolist() + val_rows.tolist()) == list(range(len(y)))
    assert torch.equal(train.y, y[train_rows]) and torch.equal(val.y, y[val_rows])
    assert len(val) == round(0.2 * len(y))
    per_class = torch.bincount(val.y, minlength=4).double()
    expected = torch.bincount(y).double() * 0.2
    assert ((per_class - expected).abs() <= 1).all()


def test_split_train_val_is_deterministic_per_seed() -> None:
    split = image_split(n=200)
    first_train, first_val = split_train_val(split, 0.25, seed=1)
    again_train, again_val = split_train_val(split, 0.25, seed=1)
    _, other_val = split_train_val(split, 0.25, seed=2)
    assert torch.equal(first_val.x, again_val.x) and torch.equal(first_train.x, again_train.x)
    assert not torch.equal(first_val.x, other_val.x)


def test_split_train_val_handles_regression_targets() -> None:
    train, val = split_train_val(tabular_split(n=40), 0.25, seed=0)
    assert (len(train), len(val)) == (30, 10)


def test_split_train_val_zero_fraction_gives_an_empty_val_split() -> None:
    split = image_split(n=20)
    train, val = split_train_val(split, 0.0, seed=0)
    assert len(train) == 20
    assert val.x.shape == (0, 3, 8, 8) and val.y.shape == (0,) and val.x.dtype == torch.uint8


# --- select_classes -------------------------------------------------------------------------------


def bundle() -> DataBundle:
    names = ["zero", "one", "two", "three", "four"]
    train, test = image_split(n=50, num_classes=5), image_split(n=25, num_classes=5, seed=1)
    return DataBundle(train, test, names, "test")


def test_select_classes_keeps_and_relabels_in_the_given_order() -> None:
    full = bundle()
    picked = select_classes(full, [3, 1])
    assert picked.classes == ["three", "one"]
    for before, after in [(full.train, picked.train), (full.test, picked.test)]:
        kept = (before.y == 3) | (before.y == 1)
        assert torch.equal(after.x, before.x[kept])
        assert torch.equal(after.y, torch.where(before.y[kept] == 3, 0, 1))


@pytest.mark.parametrize("classes", [[0, 5], [-1]])
def test_select_classes_rejects_out_of_range_indices(classes: list[int]) -> None:
    with pytest.raises(ValueError, match=r"0\.\.4"):
        select_classes(bundle(), classes)


# --- BatchLoader ----------------------------------------------------------------------------------


def epoch_batches(loader: BatchLoader, epoch: int, start_batch: int = 0) -> list[tuple[Tensor, Tensor]]:
    loader.set_epoch(epoch, start_batch=start_batch)
    return list(loader)


def labelled_split(n: int = 45) -> Split:
    """Images whose label is their row index, so batches show which rows they hold."""
    split = image_split(n=n)
    return Split(split.x, torch.arange(n))


AUGMENT = AugmentConfig(flip=True, crop_padding=2, brightness=0.1, cutout=2)


def make_loader(split: Split, **kwargs: object) -> BatchLoader:
    return BatchLoader(split, 8, Normalizer.fit(split.x, "standard"), **kwargs)


def test_loader_shuffles_every_example_exactly_once_per_epoch() -> None:
    loader = make_loader(labelled_split(), shuffle=True)
    assert len(loader) == 6 and loader.num_examples == 45
    batches = epoch_batches(loader, 0)
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 8, 5]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(45))
    assert seen.tolist() != list(range(45))


def test_loader_batches_are_normalised_float32_of_the_right_rows() -> None:
    split = labelled_split()
    loader = make_loader(split)
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 8, 8)
    assert torch.equal(x, loader.normalizer(split.x[y].float() / 255))


def test_loader_order_and_augmentation_depend_only_on_seed_and_epoch() -> None:
    first = make_loader(labelled_split(), shuffle=True, augment=AUGMENT, seed=4)
    second = make_loader(labelled_split(), shuffle=True, augment=AUGMENT, seed=4)
    epoch2_first = epoch_batches(first, 2)
    epoch2_second = epoch_batches(second, 2)
    for (xa, ya), (xb, yb) in zip(epoch2_first, epoch2_second, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    epoch3 = epoch_batches(first, 3)
    assert not torch.equal(epoch3[0][1], epoch2_first[0][1])
    other_seed = epoch_batches(make_loader(labelled_split(), shuffle=True, augment=AUGMENT, seed=5), 2)
    assert not torch.equal(other_seed[0][1], epoch2_first[0][1])


def test_loader_augments_the_same_rows_differently_in_different_epochs() -> None:
    loader = make_loader(labelled_split(), augment=AUGMENT)  # no shuffle: same rows every epoch
    x0, y0 = epoch_batches(loader, 0)[0]
    x1, y1 = epoch_batches(loader, 1)[0]
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)


def test_loader_resumes_mid_epoch_with_identical_batches() -> None:
    loader = make_loader(labelled_split(), shuffle=True, augment=AUGMENT, seed=9)
    full = epoch_batches(loader, 1)
    resumed_loader = make_loader(labelled_split(), shuffle=True, augment=AUGMENT, seed=9)
    resumed = epoch_batches(resumed_loader, 1, start_batch=4)
    assert len(resumed) == len(full) - 4
    for (xa, ya), (xb, yb) in zip(full[4:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_drop_last_drops_the_partial_batch() -> None:
    loader = make_loader(labelled_split(), shuffle=True, drop_last=True)
    batches = epoch_batches(loader, 0)
    assert len(loader) == len(batches) == 5 and all(len(y) == 8 for _, y in batches)


def test_loader_normalises_tabular_features() -> None:
    split = tabular_split()
    normalizer = Normalizer.fit(split.x, "standard")
    x = torch.cat([xb for xb, _ in BatchLoader(split, 16, normalizer)])
    torch.testing.assert_close(x[:, :3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_loader_rejects_an_empty_split() -> None:
    empty = Split(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="no examples"):
        BatchLoader(empty, 8, Normalizer("unit", "image", [], []))


def test_loader_rejects_augmenting_tabular_data() -> None:
    split = tabular_split()
    with pytest.raises(ValueError, match="images only"):
        BatchLoader(split, 8, Normalizer.fit(split.x, "unit"), augment=AugmentConfig(flip=True))


# --- data.resize, batch by batch ------------------------------------------------------------------


def resized_at_once(x: Tensor, size: int) -> Tensor:
    """What data.resize stored before it moved into the loader: the whole split resized in one go."""
    from torchvision.transforms.v2.functional import resize

    return resize(x, [size, size], antialias=True)


def test_loader_resizes_each_batch_as_resizing_the_whole_split_did() -> None:
    split = labelled_split()  # 8x8 images
    stored = Split(resized_at_once(split.x, 12), split.y)
    normalizer = Normalizer.fit(stored.x, "standard")
    for kwargs in ({}, {"shuffle": True, "augment": AUGMENT, "seed": 3}):  # resized, then augmented
        per_batch = BatchLoader(split, 8, normalizer, resize=12, **kwargs)
        assert per_batch.x.shape == (45, 3, 8, 8) and per_batch.example_shape == (3, 12, 12)
        whole = BatchLoader(stored, 8, normalizer, **kwargs)
        for epoch in (0, 1):
            pairs = zip(epoch_batches(per_batch, epoch), epoch_batches(whole, epoch), strict=True)
            for (x, y), (x_whole, y_whole) in pairs:
                assert x.shape == (len(y), 3, 12, 12)
                assert torch.equal(x, x_whole) and torch.equal(y, y_whole)


def test_progressive_sizes_scale_the_augmented_batches_of_the_early_epochs_only() -> None:
    """Epoch 0 at 4x4 and epoch 1 at 6x6: the same augmented batches as without the setting,
    scaled down; epoch 2 at the stored 8x8, bitwise the batches without it; a resumed epoch at
    its own size. ``unit`` normalisation, so that scaling and normalising commute exactly."""
    split, unit = labelled_split(), Normalizer("unit", "image", [], [])
    kwargs = {"shuffle": True, "augment": AUGMENT, "seed": 3}
    progressive = BatchLoader(split, 8, unit, progressive_sizes=[4, 6], **kwargs)
    full = BatchLoader(split, 8, unit, **kwargs)
    assert progressive.example_shape == (3, 8, 8)  # what the model is built for and tested at
    for epoch, size in ((0, 4), (1, 6), (2, 8)):
        pairs = zip(epoch_batches(progressive, epoch), epoch_batches(full, epoch), strict=True)
        for (x, y), (x_full, y_full) in pairs:
            assert x.shape == (len(y), 3, size, size) and torch.equal(y, y_full)
            assert torch.equal(x, loader.resize_batch(x_full, size) if size < 8 else x_full)
    resumed = epoch_batches(progressive, 1, start_batch=3)
    assert [x.shape[-1] for x, _ in resumed] == [6, 6, 6]
    assert torch.equal(resumed[0][0], epoch_batches(progressive, 1)[3][0])


def test_progressive_sizes_are_for_the_training_loader_and_for_images_only() -> None:
    bundle = DataBundle(image_split(n=40), image_split(n=12), ["a", "b", "c", "d"], "test")
    cfg = DataConfig(batch_size=8, val_fraction=0.25, progressive_sizes=[4])
    loaders = build_loaders(cfg, bundle, seed=0, device=torch.device("cpu"))
    sizes = {name: next(iter(getattr(loaders, name)))[0].shape[-1] for name in ("train", "val", "test")}
    assert sizes == {"train": 4, "val": 8, "test": 8}
    split = tabular_split()
    with pytest.raises(ValueError, match=r"data.progressive_sizes=\[4\] applies to images only"):
        BatchLoader(split, 8, Normalizer.fit(split.x, "unit"), progressive_sizes=[4])
    with pytest.raises(ValueError, match="progressive_sizes must be image sizes >= 1"):
        DataConfig(progressive_sizes=[16, 0])


def test_normalizer_fitted_with_resize_has_the_statistics_of_the_resized_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loader, "_FIT_CHUNK", 7)  # 45 images: chunks of 7, ..., 7 and 3
    split = labelled_split()
    fitted = Normalizer.fit(split.x, "standard", resize=12)
    resized = Normalizer.fit(resized_at_once(split.x, 12), "standard")
    assert fitted.mean == pytest.approx(resized.mean, abs=1e-12)
    assert fitted.std == pytest.approx(resized.std, abs=1e-12)
    assert fitted.std != pytest.approx(Normalizer.fit(split.x, "standard").std, abs=1e-3)  # upscaling smooths


@pytest.mark.usefixtures("isolated_data_dir")
def test_build_loaders_resize_train_val_and_test_per_batch_with_the_old_numbers() -> None:
    cfg = DataConfig(name="digits", resize=12, augment=AugmentConfig(flip=True, crop_padding=2))
    bundle = load_data(cfg)
    assert bundle.train.x.shape[1:] == (1, 8, 8)  # load_data keeps the stored size
    loaders = build_loaders(cfg, bundle, seed=0, device=torch.device("cpu"))
    resized = dataclasses.replace(
        bundle,
        train=Split(resized_at_once(bundle.train.x, 12), bundle.train.y),
        test=Split(resized_at_once(bundle.test.x, 12), bundle.test.y),
    )
    old = build_loaders(dataclasses.replace(cfg, resize=0), resized, seed=0, device=torch.device("cpu"))
    assert loaders.normalizer.to_dict() == old.normalizer.to_dict()
    for name in ("train", "val", "test"):
        new_loader, old_loader = getattr(loaders, name), getattr(old, name)
        assert new_loader.x.shape[1:] == (1, 8, 8) and new_loader.example_shape == (1, 12, 12), name
        for (x, y), (x_old, y_old) in zip(new_loader, old_loader, strict=True):
            assert x.shape[1:] == (1, 12, 12) and torch.equal(x, x_old) and torch.equal(y, y_old), name


@pytest.mark.usefixtures("isolated_data_dir")
def test_resizing_tabular_data_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match="^data.resize=8 applies to images only, but this data set is tabular$"
    ):
        load_data(DataConfig(name="iris", resize=8))
    split = tabular_split()
    with pytest.raises(ValueError, match="images only"):
        BatchLoader(split, 8, Normalizer.fit(split.x, "unit"), resize=8)
