"""Image loading and training transforms: what the model sees of each picture."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from lora_studio.core.dataset import image_to_tensor, load_image_rgb, prepare_image
from lora_studio.core.errors import DatasetError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def saved(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def close(pixel, expected, tol=12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected))


def halves(size, left, right) -> Image.Image:
    """Left half one colour, right half another."""
    img = Image.new("RGB", size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


def x_gradient(width: int, height: int) -> Image.Image:
    """Each column a different grey level, so a crop's position shows in its pixels."""
    img = Image.new("RGB", (width, height))
    img.putdata([(x * 255 // (width - 1),) * 3 for _ in range(height) for x in range(width)])
    return img


# ---------------------------------------------------------------- loading: modes
def test_transparent_pixels_become_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))
    la = Image.new("LA", (8, 8), (0, 255))
    la.putpixel((0, 0), (0, 0))
    for name, img in (("rgba.png", rgba), ("la.png", la), ("rgba.webp", rgba)):
        out = load_image_rgb(saved(img, tmp_path / name, **({"lossless": True}
                                                            if name.endswith("webp") else {})))
        assert out.mode == "RGB"
        assert out.getpixel((0, 0)) == WHITE, name
        assert out.getpixel((5, 5)) == (RED if img.mode == "RGBA" else (0, 0, 0)), name


def test_palette_with_transparent_index_becomes_white(tmp_path):
    img = Image.new("P", (8, 8), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    img.putpixel((0, 0), 0)
    out = load_image_rgb(saved(img, tmp_path / "p.png", transparency=0))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((4, 4)) == GREEN


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    img = Image.new("I;16", (8, 8), 128 * 257)  # mid grey in 16 bits
    img.putpixel((0, 0), 65535)
    out = load_image_rgb(saved(img, tmp_path / "g16.png"))
    assert out.mode == "RGB"
    assert out.getpixel((4, 4)) == (128, 128, 128)  # Pillow's plain convert gives 255 here
    assert out.getpixel((0, 0)) == WHITE


def test_grayscale_and_cmyk_become_rgb(tmp_path):
    grey = load_image_rgb(saved(Image.new("L", (8, 8), 90), tmp_path / "l.png"))
    assert grey.mode == "RGB" and grey.getpixel((3, 3)) == (90, 90, 90)
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # full magenta + yellow = red
    out = load_image_rgb(saved(cmyk, tmp_path / "cmyk.jpg", quality=95))
    assert out.mode == "RGB" and close(out.getpixel((8, 8)), RED, tol=40)


def test_exif_orientation_is_applied(tmp_path):
    img = halves((40, 20), RED, BLUE)  # landscape as stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = saved(img, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)

    out = load_image_rgb(path)

    assert out.size == (20, 40)  # portrait, as a photo viewer shows it
    assert close(out.getpixel((10, 3)), RED)  # the stored left edge is now the top
    assert close(out.getpixel((10, 36)), BLUE)


def test_unreadable_file_raises_dataset_error_naming_it(tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("not really a png", encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        load_image_rgb(bad)
    assert "holiday.png" in err.value.what and err.value.fix


# ---------------------------------------------------------------- prepare_image
def test_resize_shorter_side_then_square_crop():
    for size in ((300, 150), (150, 300), (50, 80), (64, 64)):
        out = prepare_image(Image.new("RGB", size), 64)
        assert out.size == (64, 64), size


def test_center_crop_keeps_the_middle():
    img = Image.new("RGB", (300, 100), RED)
    img.paste(GREEN, (100, 0, 200, 100))
    img.paste(BLUE, (200, 0, 300, 100))
    out = prepare_image(img, 50)  # 150x50 after resize: the middle third is green
    assert out.size == (50, 50)
    assert close(out.getpixel((2, 25)), GREEN) and close(out.getpixel((47, 25)), GREEN)


def test_random_crop_is_seeded_and_varies():
    img = x_gradient(400, 100)

    def crop(seed: int) -> bytes:
        return prepare_image(img, 100, center_crop=False, rng=random.Random(seed)).tobytes()

    assert crop(1) == crop(1)
    crops = {crop(seed) for seed in range(5)}
    assert len(crops) > 1
    center = prepare_image(img, 100).tobytes()
    assert any(c != center for c in crops)


def test_flip_mirrors_pixels():
    img = halves((64, 64), RED, BLUE)
    kept = prepare_image(img, 64)
    flipped = prepare_image(img, 64, flip=True)
    assert kept.getpixel((0, 10)) == RED and flipped.getpixel((0, 10)) == BLUE
    assert flipped.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes() == kept.tobytes()


# ---------------------------------------------------------------- image_to_tensor
def test_tensor_is_chw_float_in_minus_one_to_one():
    img = Image.new("RGB", (4, 2), (255, 0, 0))
    img.putpixel((0, 0), (0, 255, 128))
    t = image_to_tensor(img)
    assert t.shape == (3, 2, 4) and t.dtype == torch.float32
    assert t.min().item() == -1.0 and t.max().item() == 1.0
    assert t[:, 1, 1].tolist() == [1.0, -1.0, -1.0]  # red: R channel first
    assert t[2, 0, 0].item() == pytest.approx(128 / 127.5 - 1, abs=1e-6)
