"""Whole-batch augmentation: each transform does what it says, per image, reproducibly."""

from __future__ import annotations

import pytest
import torch

from dlzoo.config import AugmentConfig
from dlzoo.data.augment import (
    CUTOUT_FILL,
    affine_transform,
    alternating_flips,
    augment_batch,
    cutout,
    random_affine,
    random_brightness,
    random_contrast,
    random_crop,
    random_flip,
)
from dlzoo.data.core import Split
from dlzoo.data.loader import BatchLoader, Normalizer


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(B: int = 64, C: int = 3, H: int = 8, W: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, C, H, W, generator=gen(seed))


def shifted(image: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """(C, H, W) image moved down/right by whole pixels, zero fill (negative = up/left)."""
    C, H, W = image.shape
    out = torch.zeros_like(image)
    out[:, max(down, 0) : H + min(down, 0), max(right, 0) : W + min(right, 0)] = image[
        :, max(-down, 0) : H + min(-down, 0), max(-right, 0) : W + min(-right, 0)
    ]
    return out


def test_random_crop_is_a_zero_filled_translate_of_at_most_padding_pixels() -> None:
    padding = 2
    x = random_images(B=40)
    y = random_crop(x, padding, gen())
    assert y.shape == x.shape
    offsets = set()
    for image, cropped in zip(x, y, strict=True):
        matches = [
            (down, right)
            for down in range(-padding, padding + 1)
            for right in range(-padding, padding + 1)
            if torch.equal(cropped, shifted(image, down, right))
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 5  # each image draws its own offset


def test_random_crop_moves_a_bright_pixel_within_the_padding_window() -> None:
    padding, row, col = 3, 5, 6
    x = torch.zeros(50, 1, 12, 12)
    x[:, :, row, col] = 1.0
    y = random_crop(x, padding, gen(1))
    bright = (y == 1.0).nonzero()[:, 2:]  # (row, col) of each image's bright pixel
    assert len(bright) == 50  # never cropped away: it lies at least `padding` from the border
    assert ((bright[:, 0] - row).abs() <= padding).all()
    assert ((bright[:, 1] - col).abs() <= padding).all()
    assert len({tuple(p.tolist()) for p in bright}) > 5


def test_random_flip_mirrors_about_half_the_images_exactly() -> None:
    x = random_images(B=200)
    y = random_flip(x, gen())
    flipped = torch.tensor([torch.equal(a, torch.flip(b, dims=(2,))) for a, b in zip(y, x, strict=True)])
    unchanged = torch.tensor([torch.equal(a, b) for a, b in zip(y, x, strict=True)])
    assert (flipped ^ unchanged).all()  # every image is either exactly mirrored or untouched
    assert 70 <= int(flipped.sum()) <= 130


def test_affine_with_zero_ranges_is_the_identity() -> None:
    x = random_images(B=8, H=9, W=7)
    y = random_affine(x, rotation_deg=0.0, width_shift=0.0, height_shift=0.0, zoom=0.0, generator=gen())
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_affine_rotation_by_90_degrees_matches_rot90() -> None:
    x = random_images(B=2, H=6, W=6)
    ones, zeros = torch.ones(2), torch.zeros(2)
    y = affine_transform(x, 90 * ones, zeros, zeros, ones, ones)
    torch.testing.assert_close(y, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_affine_rotation_respects_the_aspect_ratio_of_non_square_images() -> None:
    x = torch.zeros(1, 1, 5, 9)
    x[0, 0, 2, 6] = 1.0  # two pixels right of the centre (2, 4)
    one, zero = torch.ones(1), torch.zeros(1)
    y = affine_transform(x, 90 * one, zero, zero, one, one)
    assert (y[0, 0] > 0.5).nonzero().tolist() == [[0, 4]]  # two pixels above the centre


def test_affine_shift_moves_by_the_fraction_of_the_size() -> None:
    x = random_images(B=1, H=8, W=8)
    one, zero = torch.ones(1), torch.zeros(1)
    y = affine_transform(x, zero, 0.25 * one, zero, one, one)  # 0.25 of 8 pixels = 2 pixels
    torch.testing.assert_close(y[0], shifted(x[0], 0, -2), atol=1e-5, rtol=0)


def test_affine_with_nonzero_ranges_changes_each_image_differently() -> None:
    x = random_images(B=8, H=16, W=16)
    y = random_affine(x, rotation_deg=30.0, width_shift=0.1, height_shift=0.1, zoom=0.2, generator=gen())
    assert y.shape == x.shape
    per_image_change = (y - x).abs().flatten(1).mean(1)
    assert (per_image_change > 1e-3).all()
    assert per_image_change.unique().numel() == 8


def test_brightness_shifts_each_image_mean_by_at_most_max_delta() -> None:
    x = torch.full((100, 3, 4, 4), 0.5)
    y = random_brightness(x, 0.2, gen())
    delta = (y - x).flatten(1)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta))  # one delta per image
    assert (delta.abs() <= 0.2 + 1e-6).all()
    assert delta[:, 0].std() > 0.05  # spread over the range, not a constant


def test_contrast_scales_spread_about_the_channel_mean() -> None:
    x = 0.5 + 0.1 * (random_images(B=100) - 0.5)  # values near 0.5, so nothing needs clamping
    y = random_contrast(x, 0.5, gen())
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-5, rtol=0)
    ratio = y.flatten(2).std(2) / x.flatten(2).std(2)  # (B, C): the factor of each image
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 1.5 + 1e-4
    assert ratio[:, 0].std() > 0.1


def test_photometric_augmentation_stays_in_unit_range() -> None:
    x = random_images(B=100)
    y = augment_batch(x, AugmentConfig(brightness=0.5, contrast=0.9), gen())
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert y.min() == 0.0 and y.max() == 1.0  # strong settings do reach the clamp


@pytest.mark.parametrize(("height", "width", "size"), [(8, 8, 3), (10, 7, 7)])
def test_cutout_greys_exactly_one_square_per_image(height: int, width: int, size: int) -> None:
    x = 0.6 + 0.4 * torch.rand(30, 3, height, width, generator=gen())  # no pixel is grey already
    y = cutout(x, size, gen(1))
    grey = (y == CUTOUT_FILL).all(dim=1)  # (B, H, W): all channels greyed
    assert (grey.flatten(1).sum(1) == size * size).all()
    assert torch.equal(y[~grey[:, None].expand_as(y)], x[~grey[:, None].expand_as(x)])
    rows, cols = grey.any(2), grey.any(1)  # (B, H), (B, W): the square's rows and columns
    assert (rows.sum(1) == size).all() and (cols.sum(1) == size).all()  # so grey = rows x cols
    top, left = rows.int().argmax(1), cols.int().argmax(1)  # first grey row and column
    assert rows.gather(1, (top + size - 1)[:, None]).all()  # contiguous: size rows from the first
    assert cols.gather(1, (left + size - 1)[:, None]).all()
    assert len(set(zip(top.tolist(), left.tolist(), strict=True))) > 3  # placed at random per image


def test_cutout_larger_than_the_image_greys_everything() -> None:
    y = cutout(random_images(B=4, H=5, W=5), 9, gen())
    assert (y == CUTOUT_FILL).all()


FULL = AugmentConfig(
    flip=True, crop_padding=2, brightness=0.2, contrast=0.2, rotation=10, width_shift=0.1, zoom=0.1, cutout=3
)


def test_augment_batch_is_a_pure_function_of_the_generator_seed() -> None:
    x = random_images(B=16)
    first = augment_batch(x, FULL, gen(7))
    again = augment_batch(x, FULL, gen(7))
    other = augment_batch(x, FULL, gen(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == x.shape and first.dtype == torch.float32


def test_augment_batch_with_nothing_enabled_returns_the_input() -> None:
    x = random_images(B=4)
    assert torch.equal(augment_batch(x, AugmentConfig(), gen()), x)


def test_augment_batch_keeps_the_batch_dtype_and_draws_the_same_parameters() -> None:
    x = random_images(B=4).double()
    y = augment_batch(x, FULL, gen(3))
    assert y.dtype == torch.float64
    torch.testing.assert_close(y.float(), augment_batch(x.float(), FULL, gen(3)), atol=1e-5, rtol=0)


def test_alternating_flips_alternate_from_the_first_epoch() -> None:
    first = torch.tensor([True, False, True, False])
    assert torch.equal(alternating_flips(first, 0), first)
    assert torch.equal(alternating_flips(first, 1), ~first)
    assert torch.equal(alternating_flips(first, 2), first)


def test_alternate_flip_mirrors_exactly_the_images_it_is_told_and_needs_them() -> None:
    x = random_images(B=6)
    flips = torch.tensor([True, False, False, True, True, False])
    y = augment_batch(x, AugmentConfig(alternate_flip=True), gen(), flips)
    assert torch.equal(y[flips], x[flips].flip(3)) and torch.equal(y[~flips], x[~flips])
    with pytest.raises(ValueError, match="alternate_flip needs each image's flip"):
        augment_batch(x, AugmentConfig(alternate_flip=True), gen())


def flip_states(loader: BatchLoader, images: torch.Tensor, epoch: int, start_batch: int = 0) -> torch.Tensor:
    """(N,) int: 1 where the loader mirrored example i in ``epoch``, 0 where it did not, -1 unseen.
    Labels are the example indices, so each image is found whatever the shuffle."""
    loader.set_epoch(epoch, start_batch)
    states = torch.full((len(images),), -1)
    for x, index in loader:
        mirrored = (x == images[index].flip(3)).flatten(1).all(1)
        assert (mirrored | (x == images[index]).flatten(1).all(1)).all()  # nothing but flips
        states[index] = mirrored.long()
    return states


def alternating_loader(images: torch.Tensor, seed: int = 0) -> BatchLoader:
    split = Split((images * 255).to(torch.uint8), torch.arange(len(images)))
    augment = AugmentConfig(alternate_flip=True)
    return BatchLoader(
        split, 16, Normalizer("unit", "image", [], []), shuffle=True, augment=augment, seed=seed
    )


def test_loader_alternate_flip_flips_each_image_the_other_way_each_epoch_and_resumes_exactly() -> None:
    images = (random_images(B=100) * 255).round() / 255  # exact in uint8
    loader = alternating_loader(images)
    epoch0, epoch1, epoch2 = (flip_states(loader, images, epoch) for epoch in range(3))
    assert (epoch0 >= 0).all()  # every image seen once
    assert 30 <= int(epoch0.sum()) <= 70  # epoch 0: at random, about half
    assert torch.equal(epoch1, 1 - epoch0) and torch.equal(epoch2, 1 - epoch1)
    assert torch.equal(flip_states(loader, images, 2), epoch2)  # the same draws when recomputed
    resumed = alternating_loader(images)  # a new process resuming epoch 2 at batch 3
    tail = flip_states(resumed, images, 2, start_batch=3)
    assert (tail >= 0).sum() == 100 - 3 * 16 and torch.equal(tail[tail >= 0], epoch2[tail >= 0])
    assert not torch.equal(flip_states(alternating_loader(images, seed=1), images, 0), epoch0)


def test_reflect_padded_crop_is_a_window_of_the_mirrored_border() -> None:
    padding, side = 2, 6
    x = random_images(B=30, H=side, W=side)
    y = augment_batch(x, AugmentConfig(crop_padding=padding, crop_pad_mode="reflect"), gen())
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode="reflect")
    offsets = set()
    for cropped, source in zip(y, padded, strict=True):
        matches = [
            (top, left)
            for top in range(2 * padding + 1)
            for left in range(2 * padding + 1)
            if torch.equal(cropped, source[:, top : top + side, left : left + side])
        ]
        assert len(matches) == 1  # a window of the reflect-padded image: no zero fill
        offsets.add(matches[0])
    assert len(offsets) > 5  # each image draws its own offset


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"flip": True, "alternate_flip": True}, "two ways to flip: set only one"),
        ({"crop_pad_mode": "mirror"}, "unknown data.augment.crop_pad_mode 'mirror'"),
    ],
)
def test_conflicting_or_unknown_augment_settings_are_clear(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**settings)


def test_reflect_padding_wider_than_the_image_is_a_clear_error() -> None:
    cfg = AugmentConfig(crop_padding=4, crop_pad_mode="reflect")
    with pytest.raises(
        ValueError, match="reflect padding of 4 pixels needs images larger than that, got 4x4"
    ):
        augment_batch(random_images(B=2, H=4, W=4), cfg, gen())
    assert not AugmentConfig(crop_pad_mode="reflect").enabled  # how to pad is not an augmentation
