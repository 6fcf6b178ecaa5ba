"""Turning an image file into a training tensor: upright, RGB, resized, cropped, maybe flipped.

`load_image_rgb` is the one way an image file is decoded (the dataset check uses the same steps,
so an image that passes the check also loads in training). torch is imported only inside
`image_to_tensor`, so scanning and checking a folder stay light.
"""

from __future__ import annotations

import random
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from lora_studio.core.errors import DatasetError

if TYPE_CHECKING:
    import torch

# Pillow's own decompression-bomb limit (its default, used when Pillow's is switched off).
DEFAULT_MAX_PIXELS = 89_478_485

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# What a broken EXIF block can raise while Pillow parses it.
_EXIF_ERRORS = (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError, struct.error)


def max_image_pixels() -> int:
    """The pixel count above which an image is treated as a decompression bomb."""
    return Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: transparency composited on white, 16-bit scaled to 8-bit."""
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        return _high_bit_depth_to_rgb(img)
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGB (a copy)


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale to 8 bits by scaling (Pillow's own convert clips at 255)."""
    if img.mode == "F":
        values = img
    else:
        values = img if img.mode == "I" else img.convert("I")
    low, high = values.getextrema()
    if img.mode in _SIXTEEN_BIT_MODES:
        scale = 255 / 65535
    elif img.mode == "F" and high <= 1.0:
        scale = 255.0
    elif high <= 255:
        scale = 1.0
    elif high <= 65535:
        scale = 255 / 65535
    else:
        scale = 255 / high
    return values.point(lambda v: v * scale).convert("L").convert("RGB")


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos), so training sees what a viewer shows."""
    try:
        return ImageOps.exif_transpose(img)
    except _EXIF_ERRORS:
        return img  # an unreadable EXIF block says nothing reliable about orientation


def decode_rgb(img: Image.Image) -> Image.Image:
    """Fully decode an opened image and return it upright in RGB."""
    img.load()
    return to_rgb(upright(img))


def _too_large_error(path: Path, pixels: int | None) -> DatasetError:
    size = f"{pixels:,} pixels" if pixels else "its size"
    return DatasetError(
        f"{path.name} is too large to decode safely ({size}; the limit is "
        f"{max_image_pixels():,} pixels).",
        "Downscale the image (a few megapixels is plenty for training) or remove it.")


def load_image_rgb(path: str | Path) -> Image.Image:
    """Open an image file upright and in RGB. Raises DatasetError naming the file on failure."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > max_image_pixels():
                    raise _too_large_error(path, width * height)
                return decode_rgb(opened)
    except DatasetError:
        raise
    except Image.DecompressionBombError as exc:
        raise _too_large_error(path, None) from exc
    except FileNotFoundError as exc:
        raise DatasetError(f"Image {path} no longer exists.",
                           "Check the dataset folder again; it changed after the check.") from exc
    except Exception as exc:  # any decoder failure on a user file becomes a message about it
        raise DatasetError(
            f"Cannot read image {path}: {exc}",
            "Re-export the image as PNG or JPEG, or remove it from the dataset.") from exc


def prepare_image(img: Image.Image, resolution: int, *, center_crop: bool = True,
                  flip: bool = False, rng: random.Random | None = None) -> Image.Image:
    """Resize so the shorter side is `resolution`, crop a `resolution` square, maybe mirror.

    The crop is centred, or placed at random (drawn from `rng`) when `center_crop` is False.
    Downscaling uses LANCZOS, upscaling BICUBIC.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    width, height = img.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if new_size != img.size:
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
        img = img.resize(new_size, resample=resample)
    spare_x, spare_y = new_size[0] - resolution, new_size[1] - resolution
    if center_crop:
        left, top = spare_x // 2, spare_y // 2
    else:
        rng = rng if rng is not None else random.Random()
        left, top = rng.randint(0, spare_x), rng.randint(0, spare_y)
    img = img.crop((left, top, left + resolution, top + resolution))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB image as a float32 tensor [3, H, W] with values in [-1, 1]."""
    import numpy as np
    import torch

    if img.mode != "RGB":
        img = to_rgb(img)
    pixels = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
    return pixels.permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()
