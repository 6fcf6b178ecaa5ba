"""Aspect-ratio bucketing the way kohya sd-scripts does it (`enable_bucket` and friends).

A square centre crop throws away almost half of a 9:16 phone photo; buckets keep most of it by
training each image at the (w, h) of about `resolution`² pixels whose aspect ratio is nearest its
own. The bucket table, the choice of bucket, the covering resize (`int(x * scale + .5)`) and
the `bucket_no_upscale` per-image buckets follow kohya's `make_bucket_resolutions` and
`BucketManager.select_bucket`, so a dataset lands in the buckets kohya users expect. With bucketing
off, an image trains exactly as `transforms.prepare_image` makes it. Pillow only: no torch here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image

from lora_studio.core.errors import ConfigError

Size = tuple[int, int]


@dataclass(frozen=True)
class BucketSettings:
    """Bucketing settings, named as kohya's options (`min_bucket_reso` is `min_reso`...)."""

    resolution: int
    enabled: bool = True
    min_reso: int = 256
    max_reso: int = 1024
    reso_steps: int = 64
    no_upscale: bool = False

    def validate(self) -> None:
        """Refuse settings kohya would assert on or silently adjust; the fix names the value."""
        res, steps = self.resolution, self.reso_steps
        if res <= 0 or res % 8:
            raise ConfigError("dataset.resolution", f"{res} is not a positive multiple of 8.",
                              f"Use {max(8, res - res % 8)} (the latents are 1/8 of the image).")
        if not self.enabled:
            return  # kohya ignores the bucket options when bucketing is off
        if steps <= 0:
            raise ConfigError("dataset.bucket_reso_steps", f"{steps} must be positive.",
                              "Use 64 (kohya's default).")
        if self.min_reso % steps:
            raise ConfigError(
                "dataset.min_bucket_reso", f"{self.min_reso} is not a multiple of {steps}.",
                f"Use {max(steps, self.min_reso - self.min_reso % steps)} (kohya rounds it down).")
        if self.max_reso % steps:
            raise ConfigError(
                "dataset.max_bucket_reso", f"{self.max_reso} is not a multiple of {steps}.",
                f"Use {self.max_reso + steps - self.max_reso % steps} (kohya rounds it up).")
        if not 0 < self.min_reso <= res:
            raise ConfigError(
                "dataset.min_bucket_reso", f"{self.min_reso} must be between 1 and the "
                f"resolution {res}.", f"Use {min(256, res - res % steps) or steps} or less.")
        if self.max_reso < res:
            raise ConfigError(
                "dataset.max_bucket_reso", f"{self.max_reso} is below the resolution {res}.",
                f"Use {max(1024, -(-res // steps) * steps)} or more.")


def bucket_resolutions(settings: BucketSettings) -> list[Size]:
    """kohya's bucket table, (w, h) sorted; the single (res, res) square when bucketing is off.

    `no_upscale` buckets are made per image by `fit_bucket`, not taken from this table.
    """
    settings.validate()
    res = settings.resolution
    if not settings.enabled:
        return [(res, res)]
    area, steps = res * res, settings.reso_steps
    side = int(math.sqrt(area) // steps) * steps
    resos = {(side, side)}
    for width in range(settings.min_reso, settings.max_reso + 1, steps):
        height = min(settings.max_reso, (area // width) // steps * steps)
        if height >= settings.min_reso:
            resos.update({(width, height), (height, width)})
    return sorted(resos)


@dataclass(frozen=True)
class BucketFit:
    """Where one upright image trains: its bucket and the resize that covers the bucket."""

    original: Size
    bucket: Size
    resized: Size

    @property
    def upscaled(self) -> bool:
        """True when the resize enlarges the image (it is then resampled with BICUBIC)."""
        return self.resized[0] > self.original[0] or self.resized[1] > self.original[1]

    @property
    def kept_share(self) -> float:
        """Share of the picture left after the crop: what the bucket saves over a square."""
        return (self.bucket[0] * self.bucket[1]) / (self.resized[0] * self.resized[1])

    @property
    def aspect_error(self) -> float:
        """|bucket aspect ratio - image aspect ratio|; kohya averages it as mean_img_ar_error."""
        return abs(self.bucket[0] / self.bucket[1] - self.original[0] / self.original[1])

    def crop_box(self, rng: random.Random | None = None) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the bucket in the resized image.

        Centred when `rng` is None, else uniform; x is drawn before y, as `prepare_image` does,
        so the same seed crops the same square in both.
        """
        spare_x, spare_y = self.resized[0] - self.bucket[0], self.resized[1] - self.bucket[1]
        if rng is None:
            left, top = spare_x // 2, spare_y // 2
        else:
            left, top = rng.randint(0, spare_x), rng.randint(0, spare_y)
        return left, top, left + self.bucket[0], top + self.bucket[1]


def _fit_square(width: int, height: int, res: int) -> Size:
    """The resized size of `prepare_image` (shorter side = res, Python rounding) for identity."""
    scale = res / min(width, height)
    return max(res, round(width * scale)), max(res, round(height * scale))


def _fit_table(width: int, height: int, resolutions: Sequence[Size]) -> tuple[Size, Size]:
    """kohya's select_bucket: nearest aspect ratio (first on ties); scale the side that needs it."""
    ratio = width / height
    bucket = (width, height)
    if bucket not in resolutions:  # kohya keeps an exact match even when another ar ties
        bucket = min(resolutions, key=lambda r: abs(r[0] / r[1] - ratio))
    scale = bucket[1] / height if ratio > bucket[0] / bucket[1] else bucket[0] / width
    resized = (max(bucket[0], int(width * scale + 0.5)), max(bucket[1], int(height * scale + 0.5)))
    return bucket, resized


def _round_to_steps(x: float, steps: int) -> int:
    """kohya's round_to_steps: round to an integer, then down to a multiple of `steps`."""
    value = int(x + 0.5)
    return value - value % steps


def _shrink_to_area(width: int, height: int, area: int, steps: int) -> Size:
    """kohya's no_upscale shrink: keep the ratio; round the side whose ratio error is smaller."""
    ratio = width / height
    ideal_w = math.sqrt(area * ratio)
    ideal_h = area / ideal_w
    w_rounded = _round_to_steps(ideal_w, steps)
    h_for_w = _round_to_steps(w_rounded / ratio, steps)
    h_rounded = _round_to_steps(ideal_h, steps)
    w_for_h = _round_to_steps(h_rounded * ratio, steps)
    # kohya divides by zero here for extreme ratios; an infinite error just loses the comparison
    err_w = abs(w_rounded / h_for_w - ratio) if h_for_w else math.inf
    err_h = abs(w_for_h / h_rounded - ratio) if h_rounded else math.inf
    if err_w < err_h:
        return w_rounded, int(w_rounded / ratio + 0.5)
    return int(h_rounded * ratio + 0.5), h_rounded


def _fit_no_upscale(width: int, height: int, settings: BucketSettings) -> tuple[Size, Size]:
    """kohya's bucket_no_upscale: shrink only, bucket = resized size floored to reso_steps."""
    steps, area = settings.reso_steps, settings.resolution ** 2
    fits = width * height <= area  # an image within the area is never resized
    resized = (width, height) if fits else _shrink_to_area(width, height, area, steps)
    return (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps), resized


def fit_bucket(width: int, height: int, settings: BucketSettings,
               resolutions: Sequence[Size] | None = None) -> BucketFit:
    """Choose the bucket of an upright `width` x `height` image.

    Pass `resolutions` (from `bucket_resolutions`) to avoid rebuilding the table per image.
    Raises ValueError for an empty image or one too thin to have a bucket (a 0-pixel side).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    settings.validate()
    if not settings.enabled:
        res = settings.resolution
        return BucketFit((width, height), (res, res), _fit_square(width, height, res))
    if settings.no_upscale:
        bucket, resized = _fit_no_upscale(width, height, settings)
    else:
        table = resolutions if resolutions is not None else bucket_resolutions(settings)
        bucket, resized = _fit_table(width, height, table)
    if bucket[0] <= 0 or bucket[1] <= 0:
        raise ValueError(
            f"a {width}x{height} image has no bucket: it would train at {bucket[0]}x{bucket[1]} "
            f"(sides are multiples of {settings.reso_steps}). Leave it out or crop it less thin.")
    return BucketFit((width, height), bucket, resized)


def prepare_for_bucket(img: Image.Image, fit: BucketFit, *, crop_rng: random.Random | None = None,
                       flip: bool = False) -> tuple[Image.Image, Size]:
    """Resize `img` to cover its bucket, crop it to the bucket, maybe mirror it.

    Returns the bucket-size image and (crop_top, crop_left) in resized coordinates, SDXL's
    crop conditioning. When mirrored, crop_left is measured in the mirrored picture (resized
    width - crop right), as kohya does, so it describes the picture the model sees.
    """
    if img.size != fit.original:
        raise ValueError(f"image is {img.size[0]}x{img.size[1]} but the bucket was fitted for "
                         f"{fit.original[0]}x{fit.original[1]} (fit the upright image)")
    if fit.resized != img.size:
        resample = Image.Resampling.BICUBIC if fit.upscaled else Image.Resampling.LANCZOS
        img = img.resize(fit.resized, resample=resample)
    left, top, right, bottom = box = fit.crop_box(crop_rng)
    img = img.crop(box)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        left = fit.resized[0] - right
    return img, (top, left)


def bucket_counts(fits_with_repeats: Iterable[tuple[BucketFit, int]], *,
                  with_repeats: bool = False) -> list[tuple[Size, int]]:
    """(bucket, image count) sorted by bucket; each image counts once.

    `with_repeats=True` counts an image `repeats` times instead: that is how many samples the
    bucket holds per epoch, and what kohya logs and stores in ss_bucket_info.
    """
    counts: dict[Size, int] = {}
    for fit, repeats in fits_with_repeats:
        counts[fit.bucket] = counts.get(fit.bucket, 0) + (repeats if with_repeats else 1)
    return sorted(counts.items())


def bucket_info(fits: Sequence[BucketFit], repeats: Sequence[int] | None = None) -> dict:
    """kohya's ss_bucket_info: used buckets numbered in sorted order, and mean_img_ar_error.

    kohya's counts include repeats: pass each image's `repeats` to match; the aspect-ratio
    error is averaged over images without repeats, as kohya does.
    """
    if repeats is not None and len(repeats) != len(fits):
        raise ValueError(f"{len(repeats)} repeat counts for {len(fits)} images")
    pairs = zip(fits, repeats if repeats is not None else [1] * len(fits))
    rows = bucket_counts(pairs, with_repeats=True)
    buckets = {str(i): {"resolution": [w, h], "count": n} for i, ((w, h), n) in enumerate(rows)}
    mean_error = sum(f.aspect_error for f in fits) / len(fits) if fits else 0.0
    return {"buckets": buckets, "mean_img_ar_error": mean_error}


def format_bucket_table(rows: Iterable[tuple[Size, int, int]], batch_size: int) -> list[str]:
    """Text lines of a bucket table: (bucket, images, samples per epoch) rows, with a warning
    under each bucket whose epoch cannot fill one batch.

    Batches are drawn within a bucket, so such a bucket trains in smaller batches than asked.
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    lines = []
    for (width, height), count, per_epoch in rows:
        noun = "image" if count == 1 else "images"
        lines.append(f"  {f'{width}x{height}':<9}{count:>5} {noun:<7}{per_epoch:>6} per epoch")
        if per_epoch < batch_size:
            lines.append(f"    ! {width}x{height} has {per_epoch} sample(s) per epoch, fewer "
                         f"than the batch size {batch_size}: its batches hold only "
                         f"{per_epoch}.")
    return lines
