"""Synthetic captchas for multi-task learning (the notes' captcha example), drawn with Pillow.

Each image is grayscale uint8 (1, 32, 96) and shows ``CAPTCHA_LENGTH`` = 4 characters, each
one of the 36 classes 0-9A-Z, dark ink on a light background, one character per quarter of
the width (so head i of a multi-head model reads position i), each rotated up to 20 degrees
and shifted by a few pixels, with two noise lines and a sprinkle of dots on top. Labels
``y`` are int64 (N, 4) class indices into ``CAPTCHA_CHARACTERS``.

The registered data set ``captcha`` is 20,000 training and 2,000 test captchas drawn from
seeds 0 and 1, so it is the same on every machine with the same Pillow and FreeType; image
k of a split depends only on (seed, k) and its text. The font is the one Pillow ships
(Aileron, ``ImageFont.load_default(size=24)``, Pillow >= 10.1 with FreeType). Drawing the
22,000 images takes a few seconds; they are cached as a tensor file afterwards.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw, ImageFont, features

from dlzoo.data.core import DataBundle, Split
from dlzoo.data.sources import cache_path, cached_bundle
from dlzoo.registry import DATASETS

CAPTCHA_CHARACTERS = string.digits + string.ascii_uppercase
"""The 36 classes, in label order."""
CAPTCHA_LENGTH = 4
HEIGHT, WIDTH = 32, 96
FONT_SIZE = 24  # pixels; a glyph is about 16 high and 12-23 wide, a cell is 96 / 4 = 24 wide
ANGLES = tuple(range(-20, 21, 2))
"""Rotations in degrees, pre-rendered once per character (drawing stays fast)."""
JITTER = 3  # max shift of a character from its cell's centre, in pixels, each direction
NOISE_LINES = 2
NOISE_DOTS = 30
TRAIN_SIZE, TEST_SIZE = 20_000, 2_000
TRAIN_SEED, TEST_SEED = 0, 1


def encode(text: str) -> list[int]:
    """Class indices of ``text`` (its characters must be among 0-9A-Z)."""
    bad = sorted({char for char in text if char not in CAPTCHA_CHARACTERS})
    if bad:
        raise ValueError(f"captcha text {text!r} has {bad}; use only the characters 0-9 and A-Z")
    return [CAPTCHA_CHARACTERS.index(char) for char in text]


def decode(labels: torch.Tensor | list[int]) -> str:
    """The text of one row of class indices."""
    return "".join(CAPTCHA_CHARACTERS[int(i)] for i in labels)


@functools.cache
def _glyphs() -> list[list[Image.Image]]:
    """``[class][angle index]``: each character as a white-on-black 'L' mask, rotated."""
    if not features.check("freetype2"):
        raise ValueError(
            "drawing captchas needs Pillow built with FreeType; install the pillow wheel from PyPI"
        )
    font = ImageFont.load_default(size=FONT_SIZE)
    glyphs = []
    for char in CAPTCHA_CHARACTERS:
        left, top, right, bottom = font.getbbox(char)
        mask = Image.new("L", (right - left + 4, bottom - top + 4), 0)
        ImageDraw.Draw(mask).text((2 - left, 2 - top), char, fill=255, font=font)
        glyphs.append([mask.rotate(a, resample=Image.Resampling.BILINEAR, expand=True) for a in ANGLES])
    return glyphs


def _integers(rng: np.random.Generator, low: int, high: int, shape: int | tuple[int, ...]) -> np.ndarray:
    """Uniform integers in [low, high); ``rng.integers`` costs ~10x more for arrays this small."""
    return low + (rng.random(shape) * (high - low)).astype(np.int64)


def _draw(labels: list[int], rng: np.random.Generator) -> np.ndarray:
    """uint8 (HEIGHT, WIDTH): the characters ``labels`` one per cell, then the noise on top."""
    angle = _integers(rng, 0, len(ANGLES), CAPTCHA_LENGTH)
    shift = _integers(rng, -JITTER, JITTER + 1, (CAPTCHA_LENGTH, 2))  # (dx, dy) per character
    ink = _integers(rng, 0, 90, CAPTCHA_LENGTH)
    background = 200 + int(_integers(rng, 0, 56, 1)[0])  # light grey to white
    line_ink, dot_ink = _integers(rng, 0, 150, 2).tolist()
    canvas = Image.new("L", (WIDTH, HEIGHT), background)
    cell = WIDTH // CAPTCHA_LENGTH
    for position, label in enumerate(labels):
        glyph = _glyphs()[label][angle[position]]
        x = position * cell + (cell - glyph.width) // 2 + int(shift[position, 0])
        y = (HEIGHT - glyph.height) // 2 + int(shift[position, 1])
        canvas.paste(int(ink[position]), (x, y), mask=glyph)
    draw = ImageDraw.Draw(canvas)
    size = np.array([WIDTH, HEIGHT])
    for line in (rng.random((NOISE_LINES, 2, 2)) * size).astype(int).tolist():  # two (x, y) ends each
        draw.line([tuple(end) for end in line], fill=line_ink, width=1)
    dots = (rng.random((NOISE_DOTS, 2)) * size).astype(int)
    draw.point(dots.ravel().tolist(), fill=dot_ink)
    return np.asarray(canvas)


def render_captcha(text: str, rng: np.random.Generator) -> torch.Tensor:
    """One captcha of ``text`` as uint8 (1, HEIGHT, WIDTH); every random choice comes from ``rng``."""
    labels = encode(text)
    if len(labels) != CAPTCHA_LENGTH:
        raise ValueError(f"captcha text {text!r} has {len(labels)} characters; it needs {CAPTCHA_LENGTH}")
    return torch.from_numpy(_draw(labels, rng).copy()).unsqueeze(0)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` of the split made from ``seed``."""
    return np.random.default_rng((seed, index))


def captcha_split(size: int, seed: int) -> Split:
    """``size`` captchas with uniformly random texts: x uint8 (N, 1, HEIGHT, WIDTH), y int64 (N, 4).

    The first n captchas of a split are the same whatever its size."""
    labels = np.random.default_rng(seed).integers(0, len(CAPTCHA_CHARACTERS), (size, CAPTCHA_LENGTH))
    images = np.empty((size, 1, HEIGHT, WIDTH), dtype=np.uint8)
    for index, row in enumerate(labels.tolist()):
        images[index, 0] = _draw(row, image_rng(seed, index))
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def captcha_bundle(train_size: int, test_size: int) -> DataBundle:
    """``train_size`` and ``test_size`` captchas drawn from ``TRAIN_SEED`` and ``TEST_SEED`` (not cached)."""
    source = (
        f"synthetic 4-character captchas drawn with Pillow {PIL.__version__} ({train_size:,}/{test_size:,}, "
        f"seeds {TRAIN_SEED}/{TEST_SEED})"
    )
    return DataBundle(
        captcha_split(train_size, TRAIN_SEED),
        captcha_split(test_size, TEST_SEED),
        list(CAPTCHA_CHARACTERS),
        source,
    )


@DATASETS.register("captcha")
def captcha(root: Path, download: bool) -> DataBundle:
    """20,000/2,000 synthetic captchas, uint8 (N, 1, 32, 96), labels int64 (N, 4) over 0-9A-Z."""
    # The cache key follows this file (the drawing code) and the libraries that rasterise the font.
    name = f"captcha-{TRAIN_SIZE}-{TEST_SIZE}-pil{PIL.__version__}-ft{features.version('freetype2')}"
    return cached_bundle(cache_path(name, Path(__file__)), lambda: captcha_bundle(TRAIN_SIZE, TEST_SIZE))
