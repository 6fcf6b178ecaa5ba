"""Is a training preview obviously broken? All black, all white, or one flat colour.

A run that diverged (NaN weights, an fp16 overflow in the VAE) renders black previews — diffusers
turns NaN pixels into 0 — and an overtrained or collapsed LoRA renders white or single-colour
ones. `preview_problem(image)` names such a preview from simple statistics of a <= 64 x 64 copy
(so it costs about a millisecond even for a 1024 px SDXL preview):

* "all black"          99 % of the pixels have a luminance <= `BLACK_HIGH` (20 of 255)
* "all white"          99 % of the pixels have a luminance >= `WHITE_LOW` (235 of 255)
* "flat (one colour)"  every channel's standard deviation < `FLAT_STD` (4 of 255)

Percentiles, not min / max, so a few stray pixels (JPEG-ish speckle, a dot of noise) do not hide
a black frame. The thresholds sit far from real previews: the shipped sample images and Tiny
Shapes renders (red stars on white, grey, black backgrounds) have a 99th-percentile luminance of
88 or more, a 1st percentile of 190 or less and channel deviations of 22 or more; the random-weight
tiny test model renders a grey speckle with a deviation of 40. Noise is not flagged: a tiny or
barely trained model legitimately renders noisy pictures.

`PROBLEM_HINTS[problem]` says what a flagged preview usually means and what to try.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ALL_BLACK = "all black"
ALL_WHITE = "all white"
FLAT = "flat (one colour)"

CHECK_SIZE = 64  # the image is reduced to at most this many pixels a side first
BLACK_HIGH = 20.0  # luminance (0-255) that 99 % of the pixels of a black preview stay under
WHITE_LOW = 235.0  # luminance that 99 % of the pixels of a white preview stay over
FLAT_STD = 4.0  # per-channel standard deviation (0-255) below which a preview is one colour

PROBLEM_HINTS = {
    ALL_BLACK: "A black preview usually means the model produced NaN: training diverged or "
               "fp16 overflowed. Watch the loss; try a lower learning rate, "
               "train.max_grad_norm = 1.0, or bf16 / fp32 instead of fp16.",
    ALL_WHITE: "A white preview usually means the LoRA is overtrained or the learning rate is "
               "too high. Compare with earlier previews; lower the learning rate or stop at an "
               "earlier saved step.",
    FLAT: "A single-colour preview usually means the model collapsed (learning rate too high, "
          "or training diverged). Compare with earlier previews and check the loss.",
}

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class PreviewStats:
    """Statistics of the reduced image, 0-255: luminance 1st / 99th percentile, mean, and the
    largest standard deviation of the three colour channels."""

    low: float
    high: float
    mean: float
    channel_std: float


def preview_stats(image: Any) -> PreviewStats:
    """Statistics of a PIL image (any mode) after reducing it to <= CHECK_SIZE a side."""
    from PIL import Image

    small = image
    if max(image.size) > CHECK_SIZE:
        scale = CHECK_SIZE / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        small = image.resize(size, Image.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(small.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    luma = pixels @ _LUMA
    low, high = np.percentile(luma, [1, 99])
    return PreviewStats(low=float(low), high=float(high), mean=float(luma.mean()),
                        channel_std=float(pixels.std(axis=0).max()))


def preview_problem(image: Any) -> str | None:
    """ALL_BLACK, ALL_WHITE, FLAT, or None for a preview that looks like a picture."""
    stats = preview_stats(image)
    if stats.high <= BLACK_HIGH:
        return ALL_BLACK
    if stats.low >= WHITE_LOW:
        return ALL_WHITE
    if stats.channel_std < FLAT_STD:
        return FLAT
    return None
