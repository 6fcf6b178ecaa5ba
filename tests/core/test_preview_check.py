"""Broken training previews (all black, all white, one flat colour) are named; real pictures —
the shipped sample and regularization images, dark or bright, and a random model's grey
speckle — are not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.paths import sample_dataset_dir, sample_reg_dir
from lora_studio.core.train.preview_check import (
    ALL_BLACK,
    ALL_WHITE,
    FLAT,
    PROBLEM_HINTS,
    preview_problem,
)


def speckled(size: int, base: int, spread: int, dots: int = 0, seed: int = 0) -> Image.Image:
    """A `base` grey image with +-`spread` noise and `dots` bright single pixels."""
    rng = np.random.default_rng(seed)
    pixels = base + rng.integers(-spread, spread + 1, (size, size, 3))
    flat = pixels.reshape(-1, 3)
    flat[rng.choice(len(flat), dots, replace=False)] = 255
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("image, problem", [
    (Image.new("RGB", (512, 512)), ALL_BLACK),  # what NaN latents decode to
    (speckled(512, 6, 6, dots=200), ALL_BLACK),  # near black with noise and a few stray dots
    (Image.new("L", (32, 32), 3), ALL_BLACK),  # any mode
    (Image.new("RGB", (1024, 768), (255, 255, 255)), ALL_WHITE),
    (speckled(64, 248, 6), ALL_WHITE),
    (Image.new("RGBA", (64, 64), (40, 120, 200, 255)), FLAT),
    (speckled(256, 128, 2), FLAT),  # grey mush with a faint grain
    (Image.new("RGB", (1, 1), (90, 90, 90)), FLAT),
])
def test_broken_previews_are_named(image, problem):
    assert preview_problem(image) == problem
    assert PROBLEM_HINTS[problem]  # and the strip can say what to try


def shipped_images() -> list:
    reg = sorted(sample_reg_dir().glob("*.png"))
    return sorted(sample_dataset_dir().glob("*.png")) + reg[::12]


def test_shipped_pictures_dark_or_bright_are_never_flagged():
    paths = shipped_images()
    assert len(paths) >= 40
    flagged = {p.name: preview_problem(Image.open(p)) for p in paths}
    assert {name: p for name, p in flagged.items() if p} == {}


@pytest.mark.parametrize("image", [
    speckled(32, 120, 70, seed=1),  # a random-weight tiny model's grey speckle
    speckled(64, 10, 4, dots=300),  # a night sky: black with 7 % bright stars
    Image.linear_gradient("L").resize((512, 512)),  # a smooth gradient over the whole range
])
def test_dark_noisy_or_smooth_pictures_are_not_flagged(image):
    assert preview_problem(image) is None


def test_a_picture_on_a_white_background_is_not_white():
    """Tiny Shapes previews are a red star on white: mostly white, but not a white frame."""
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste((220, 30, 30), (20, 20, 44, 44))  # 14 % of the picture
    assert preview_problem(image) is None
