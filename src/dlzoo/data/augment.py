"""Whole-batch image augmentation with tensor ops.

Every function takes a float32 batch ``x`` of shape (B, C, H, W) with pixel
values in [0, 1] (before normalisation) and a ``torch.Generator``; each image
gets its own random draws, and nothing loops over images in Python. The result
is a pure function of the input and the generator state, which is what makes a
resumed run see bitwise the same batches as an uninterrupted one.

The random parameters (a few numbers per image) are drawn on the generator's
device and then moved to the batch's device, so a CPU generator gives the same
augmentation whether the batch lives on the CPU or a GPU.

One draw is not per batch: airbench's alternating flip mirrors an image in an
epoch exactly when it was not mirrored in the previous one, so it depends on the
image, not on its batch. The loader draws each image's epoch-0 flip once
(``first_flips``) and passes the batch's flips for the epoch (``alternating_flips``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dlzoo.config import AugmentConfig

CUTOUT_FILL = 0.5
"""Value of a cut-out square: mid grey in [0, 1] pixel units."""


def _uniform(
    low: float, high: float, shape: tuple[int, ...], generator: torch.Generator, x: Tensor
) -> Tensor:
    """Uniform draws in [low, high) from ``generator``, returned on x's device and dtype."""
    draws = torch.rand(shape, generator=generator, device=generator.device)
    return (low + (high - low) * draws).to(device=x.device, dtype=x.dtype)


def _randint(high: int, shape: tuple[int, ...], generator: torch.Generator, x: Tensor) -> Tensor:
    """Integer draws in [0, high) of ``shape``, returned on x's device."""
    draws = torch.randint(0, high, shape, generator=generator, device=generator.device)
    return draws.to(x.device)


def random_crop(x: Tensor, padding: int, generator: torch.Generator, pad_mode: str = "zeros") -> Tensor:
    """Pad each side by ``padding`` pixels, then cut a random H x W window per image.

    Equivalent to translating each image by up to ``padding`` pixels in each
    direction, filling with zeros (``pad_mode="zeros"``) or with the mirrored
    border (``"reflect"``, airbench's choice). Two gathers (rows, then columns)
    cut all the windows at once.
    """
    if padding == 0:
        return x
    B, C, H, W = x.shape
    if pad_mode == "reflect" and padding >= min(H, W):
        raise ValueError(
            f"reflect padding of {padding} pixels needs images larger than that, got {H}x{W}; "
            "lower data.augment.crop_padding or use crop_pad_mode=zeros"
        )
    mode = "reflect" if pad_mode == "reflect" else "constant"
    padded = F.pad(x, (padding, padding, padding, padding), mode=mode)  # (B, C, H + 2p, W + 2p)
    top = _randint(2 * padding + 1, (B,), generator, x)
    left = _randint(2 * padding + 1, (B,), generator, x)
    rows = top[:, None] + torch.arange(H, device=x.device)  # (B, H) source row of each output row
    cols = left[:, None] + torch.arange(W, device=x.device)  # (B, W)
    row_index = rows[:, None, :, None].expand(B, C, H, W + 2 * padding)
    x = padded.gather(2, row_index)  # (B, C, H, W + 2p)
    col_index = cols[:, None, None, :].expand(B, C, H, W)
    return x.gather(3, col_index)  # (B, C, H, W)


def flip_where(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the images whose entry of the (B,) bool ``flip`` is true."""
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    return flip_where(x, _uniform(0.0, 1.0, (x.shape[0],), generator, x) < 0.5)


def first_flips(num_images: int, generator: torch.Generator) -> Tensor:
    """(N,) bool: whether each image of a split is mirrored in epoch 0 of an alternating flip."""
    return torch.rand(num_images, generator=generator) < 0.5


def alternating_flips(first: Tensor, epoch: int) -> Tensor:
    """Whether each image is mirrored in ``epoch``, given ``first``, its flips in epoch 0:
    the opposite of the previous epoch every time, so in any two consecutive epochs an image
    is seen once as it is and once mirrored (airbench's alternating flip)."""
    return first ^ bool(epoch % 2)


def affine_transform(
    x: Tensor, angle_deg: Tensor, shift_x: Tensor, shift_y: Tensor, zoom_x: Tensor, zoom_y: Tensor
) -> Tensor:
    """Rotate, shift and zoom each image about its centre with one ``grid_sample`` call.

    All parameters are (B,) tensors: ``angle_deg`` in degrees, ``shift_x`` and
    ``shift_y`` as fractions of the width and height, ``zoom_x`` and ``zoom_y``
    as Keras's zoom factors (the output pixel at offset d from the centre
    samples the input at d * zoom, so a factor above 1 shrinks the content).
    A positive angle turns the content counter-clockwise as displayed (row 0
    at the top), like ``torch.rot90``; positive shifts move it left and up.
    Pixels that come from outside the image are filled with zeros, and values
    are interpolated bilinearly.
    """
    B, _, H, W = x.shape
    angle = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output -> input map in pixel units about the centre: rotation @ diag(zoom_x, zoom_y).
    # affine_grid works in coordinates normalised to [-1, 1] per axis, so the off-diagonal
    # terms are rescaled by the aspect ratio to keep a rotation a rotation on non-square images.
    theta = torch.stack(
        [
            torch.stack([cos * zoom_x, -sin * zoom_y * (H / W), 2 * shift_x], dim=1),
            torch.stack([sin * zoom_x * (W / H), cos * zoom_y, 2 * shift_y], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, [B, x.shape[1], H, W], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(
    x: Tensor,
    rotation_deg: float,
    width_shift: float,
    height_shift: float,
    zoom: float,
    generator: torch.Generator,
) -> Tensor:
    """Keras ImageDataGenerator's random rotation, shift and zoom, for a whole batch at once.

    Per image: an angle uniform in [-rotation_deg, rotation_deg] degrees,
    shifts uniform in [-width_shift, width_shift] and [-height_shift,
    height_shift] fractions of the size, and zoom factors uniform in
    [1 - zoom, 1 + zoom], drawn independently for the two axes as Keras does.
    The fill is zeros (Keras defaults to 'nearest'; zeros matches the
    zero-padded random crop and leaves no smeared edges).
    """
    draws = _uniform(-1.0, 1.0, (x.shape[0], 5), generator, x)  # (B, 5): angle, dx, dy, zx, zy
    return affine_transform(
        x,
        angle_deg=draws[:, 0] * rotation_deg,
        shift_x=draws[:, 1] * width_shift,
        shift_y=draws[:, 2] * height_shift,
        zoom_x=1 + draws[:, 3] * zoom,
        zoom_y=1 + draws[:, 4] * zoom,
    )


def random_brightness(x: Tensor, max_delta: float, generator: torch.Generator) -> Tensor:
    """Add one delta uniform in [-max_delta, max_delta] to all pixels of an image (TF's random_brightness)."""
    delta = _uniform(-max_delta, max_delta, (x.shape[0], 1, 1, 1), generator, x)
    return x + delta


def random_contrast(x: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """Scale each image's distance from its per-channel mean by a factor in [1 - amount, 1 + amount].

    This is TF's adjust_contrast with a random factor per image.
    """
    factor = _uniform(1.0 - amount, 1.0 + amount, (x.shape[0], 1, 1, 1), generator, x)
    mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return (x - mean) * factor + mean


def cutout(x: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Set one random ``size`` x ``size`` square per image to mid grey (0.5).

    The square is placed wholly inside the image (clipped to the image when
    ``size`` exceeds it), so every image loses exactly size * size pixels.
    """
    if size == 0:
        return x
    B, _, H, W = x.shape
    height, width = min(size, H), min(size, W)
    top = _randint(H - height + 1, (B,), generator, x)
    left = _randint(W - width + 1, (B,), generator, x)
    rows = torch.arange(H, device=x.device)
    cols = torch.arange(W, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + height)  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + width)  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return x.masked_fill(mask[:, None], CUTOUT_FILL)


def augment_batch(
    x: Tensor, cfg: AugmentConfig, generator: torch.Generator, flips: Tensor | None = None
) -> Tensor:
    """Apply every enabled augmentation in ``cfg`` to a (B, C, H, W) batch in [0, 1].

    ``flips`` (B,) bool says which images an alternating flip mirrors in this
    epoch (``alternating_flips``); it is needed exactly when ``cfg.alternate_flip``.
    Order: geometry (crop, rotation/shift/zoom, flip), then photometry
    (brightness, contrast) followed by a clamp to [0, 1], then cutout last so
    its squares stay exactly grey.
    """
    if cfg.alternate_flip and flips is None:
        raise ValueError("data.augment.alternate_flip needs each image's flip for the epoch: pass flips")
    if cfg.crop_padding:
        x = random_crop(x, cfg.crop_padding, generator, cfg.crop_pad_mode)
    if cfg.rotation or cfg.width_shift or cfg.height_shift or cfg.zoom:
        x = random_affine(x, cfg.rotation, cfg.width_shift, cfg.height_shift, cfg.zoom, generator)
    if cfg.flip:
        x = random_flip(x, generator)
    if cfg.alternate_flip:
        x = flip_where(x, flips)
    if cfg.brightness or cfg.contrast:
        if cfg.brightness:
            x = random_brightness(x, cfg.brightness, generator)
        if cfg.contrast:
            x = random_contrast(x, cfg.contrast, generator)
        x = x.clamp(0.0, 1.0)
    if cfg.cutout:
        x = cutout(x, cfg.cutout, generator)
    return x
