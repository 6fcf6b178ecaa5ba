"""Aspect-ratio buckets, kohya's way: which bucket an image trains in, and what of it survives."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.core.dataset import buckets
from lora_studio.core.dataset.buckets import (
    BucketFit,
    BucketSettings,
    bucket_counts,
    bucket_info,
    bucket_resolutions,
    fit_bucket,
    format_bucket_table,
    prepare_for_bucket,
)
from lora_studio.core.dataset.transforms import prepare_image
from lora_studio.core.errors import ConfigError

S512 = BucketSettings(512)
OFF512 = BucketSettings(512, enabled=False)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels, so any difference in resize, crop or flip shows."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def xy_gradient(width: int, height: int) -> Image.Image:
    """Red follows x, green follows y: a crop's position shows in its pixels."""
    img = Image.new("RGB", (width, height))
    img.putdata([(x * 255 // (width - 1), y * 255 // (height - 1), 0)
                 for y in range(height) for x in range(width)])
    return img


# --- the bucket table -------------------------------------------------------------------------

def test_table_512_is_kohyas():
    # make_bucket_resolutions((512, 512), 256, 1024, 64), worked by hand: for each width w in
    # 256..1024, h = min(1024, floor(262144 / w to 64)) if h >= 256, plus the transposes.
    expected = [(256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768),
                (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (704, 320),
                (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256)]
    table = bucket_resolutions(S512)
    assert table == expected
    for needed in [(512, 512), (384, 640), (640, 384), (448, 576)]:
        assert needed in table
    for w, h in table:
        assert w * h <= 512 ** 2
        assert w % 64 == 0 and h % 64 == 0
        assert 256 <= w <= 1024 and 256 <= h <= 1024
        assert (h, w) in table  # both orientations


def test_table_1024_has_the_sdxl_buckets():
    # The SDXL sizes need max_bucket_reso above 1024 (kohya's SDXL recipes use 2048); with the
    # default 1024 no side may exceed 1024, so 832x1216 is not there.
    assert (832, 1216) not in bucket_resolutions(BucketSettings(1024))
    table = bucket_resolutions(BucketSettings(1024, max_reso=2048))
    for needed in [(1024, 1024), (832, 1216), (1216, 832), (896, 1152), (1152, 896)]:
        assert needed in table
    assert all(w * h <= 1024 ** 2 for w, h in table)
    assert table == sorted(table)


def test_table_is_one_square_when_disabled():
    assert bucket_resolutions(OFF512) == [(512, 512)]


# --- choosing a bucket ------------------------------------------------------------------------

@pytest.mark.parametrize("size, bucket", [((900, 1600), (384, 640)), ((1600, 900), (640, 384))])
def test_phone_photo_keeps_most_of_its_picture(size, bucket):
    fit = fit_bucket(*size, S512)
    assert fit.bucket == bucket
    assert fit.kept_share >= 0.90
    square = fit_bucket(*size, OFF512)
    assert square.bucket == (512, 512)
    assert square.kept_share < 0.57  # a square crop keeps 512/910 = 56 %


def test_nearest_aspect_ratio_is_chosen():
    table = bucket_resolutions(S512)
    assert fit_bucket(1000, 1000, S512).bucket == (512, 512)
    # 700x1000 (0.70): 448x576 (0.78, off 0.078) beats 384x640 (0.60, off 0.100)
    assert fit_bucket(700, 1000, S512).bucket == (448, 576)
    rng = random.Random(3)
    for _ in range(200):
        w, h = rng.randint(100, 4000), rng.randint(100, 4000)
        fit = fit_bucket(w, h, S512, table)
        best = min(abs(bw / bh - w / h) for bw, bh in table)
        assert fit.aspect_error == pytest.approx(best)
        assert fit.resized[0] >= fit.bucket[0] and fit.resized[1] >= fit.bucket[1]
        assert fit.resized[0] == fit.bucket[0] or fit.resized[1] == fit.bucket[1]


def test_ties_go_to_the_first_bucket_and_an_exact_size_wins():
    # A square image is 0.5 off both 1:2 and 3:2; the first listed one wins, as numpy argmin.
    assert fit_bucket(600, 600, S512, [(256, 512), (768, 512)]).bucket == (256, 512)
    assert fit_bucket(600, 600, S512, [(768, 512), (256, 512)]).bucket == (768, 512)
    # kohya keeps an image already at a bucket size in that bucket, even with a tie before it.
    assert fit_bucket(256, 256, S512, [(512, 512), (256, 256)]).bucket == (256, 256)


def test_covering_resize_uses_kohyas_rounding():
    # 1024x1025 into 512x512: scale 0.5 by the width; height 512.5 -> int(512.5 + .5) = 513
    fit = fit_bucket(1024, 1025, S512)
    assert (fit.bucket, fit.resized) == ((512, 512), (512, 513))
    assert not fit.upscaled
    # 200x300 (0.667): 384x640 (0.6, off 0.067) beats 448x576 (0.778, off 0.111); wider than
    # the bucket, so scaled by the height: 640 / 300, width 426.7 -> 427
    small = fit_bucket(200, 300, S512)
    assert small.bucket == (384, 640)
    assert small.resized == (427, 640) and small.upscaled


def test_no_upscale_never_enlarges_a_small_image():
    # Worked by hand: 300x500 is under 512² pixels, so it keeps its size (kohya resizes nothing)
    # and the bucket is that size floored to 64: 256x448; the crop keeps 114688 / 150000.
    fit = fit_bucket(300, 500, BucketSettings(512, no_upscale=True))
    assert fit.bucket == (256, 448)
    assert fit.resized == (300, 500)
    assert not fit.upscaled
    assert fit.kept_share == pytest.approx(256 * 448 / (300 * 500))
    # Without no_upscale the same image is enlarged into a table bucket.
    assert fit_bucket(300, 500, S512).upscaled


def test_no_upscale_shrinks_a_big_image_into_the_area():
    # Worked by hand for 4000x3000 (ratio 4/3, area 512²): ideal 591.2 x 443.4. Width first:
    # 591 -> 576, height 432 -> 384, ratio 1.5 (off 0.167). Height first: 443 -> 384, width
    # 512 -> 512, ratio 4/3 (off 0). Height wins: resized 512x384, bucket 512x384.
    settings = BucketSettings(512, no_upscale=True)
    fit = fit_bucket(4000, 3000, settings)
    assert (fit.resized, fit.bucket) == ((512, 384), (512, 384))
    rng = random.Random(5)
    for _ in range(200):
        w, h = rng.randint(600, 6000), rng.randint(600, 6000)
        fit = fit_bucket(w, h, settings)
        assert fit.bucket[0] * fit.bucket[1] <= 512 ** 2
        assert fit.bucket[0] % 64 == 0 and fit.bucket[1] % 64 == 0
        assert not fit.upscaled


@pytest.mark.parametrize("size, settings", [
    ((40, 1000), BucketSettings(512, no_upscale=True)),
    ((20000, 10), BucketSettings(512, no_upscale=True)),
    ((0, 100), S512),
])
def test_an_image_without_a_bucket_is_refused(size, settings):
    with pytest.raises(ValueError, match="bucket|positive"):
        fit_bucket(*size, settings)


# --- preparing the picture --------------------------------------------------------------------

@pytest.mark.parametrize("size", [(900, 1600), (1600, 900), (300, 200), (512, 512), (1024, 1025),
                                  (513, 2000)])
def test_disabled_mode_is_pixel_identical_to_prepare_image(size):
    img = noise(*size)
    fit = fit_bucket(*size, OFF512)
    assert prepare_for_bucket(img, fit)[0].tobytes() == prepare_image(img, 512).tobytes()
    flipped = prepare_for_bucket(img, fit, flip=True)[0]
    assert flipped.tobytes() == prepare_image(img, 512, flip=True).tobytes()
    ours = prepare_for_bucket(img, fit, crop_rng=random.Random(7))[0]
    theirs = prepare_image(img, 512, center_crop=False, rng=random.Random(7))
    assert ours.tobytes() == theirs.tobytes()


def test_centre_crop_returns_its_coordinates():
    img = xy_gradient(900, 1600)
    fit = fit_bucket(900, 1600, S512)
    assert fit.resized == (384, 683)  # 1600 * 384 / 900 = 682.7
    out, (top, left) = prepare_for_bucket(img, fit)
    assert out.size == (384, 640)
    assert (top, left) == (43 // 2, 0)
    resized = img.resize((384, 683), Image.Resampling.LANCZOS)
    assert out.tobytes() == resized.crop((0, 21, 384, 661)).tobytes()


def test_random_crop_is_reproducible_and_inside_the_image():
    fit = fit_bucket(900, 1600, OFF512)  # 512x910: 398 rows to spare
    boxes = {fit.crop_box(random.Random(seed)) for seed in range(20)}
    assert len(boxes) > 10
    assert fit.crop_box(random.Random(4)) == fit.crop_box(random.Random(4))
    for left, top, right, bottom in boxes:
        assert 0 <= left and 0 <= top and right <= fit.resized[0] and bottom <= fit.resized[1]
        assert (right - left, bottom - top) == fit.bucket
    img = xy_gradient(900, 1600)
    a, coords_a = prepare_for_bucket(img, fit, crop_rng=random.Random(1))
    b, coords_b = prepare_for_bucket(img, fit, crop_rng=random.Random(1))
    c, coords_c = prepare_for_bucket(img, fit, crop_rng=random.Random(2))
    assert a.tobytes() == b.tobytes() and coords_a == coords_b
    assert coords_a != coords_c and a.tobytes() != c.tobytes()
    left, top, _, _ = fit.crop_box(random.Random(1))
    assert coords_a == (top, left)


def test_flip_mirrors_and_measures_crop_left_in_the_mirrored_picture():
    img = xy_gradient(1600, 900)
    fit = fit_bucket(1600, 900, S512)
    assert (fit.bucket, fit.resized) == ((640, 384), (683, 384))
    plain, (top, left) = prepare_for_bucket(img, fit)
    mirrored, (m_top, m_left) = prepare_for_bucket(img, fit, flip=True)
    assert mirrored.tobytes() == plain.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    assert (top, left) == (0, 21)
    assert (m_top, m_left) == (0, 683 - (21 + 640))  # kohya: target width - crop right


def test_wrong_image_for_the_fit_is_refused():
    fit = fit_bucket(1600, 900, S512)
    with pytest.raises(ValueError, match="fitted for 1600x900"):
        prepare_for_bucket(noise(900, 1600), fit)


def test_module_does_not_import_torch():
    root = Path(buckets.__file__).resolve().parents[3]  # the lora_studio this test imported
    code = ("import sys, lora_studio.core.dataset.buckets; "
            "print('torch' if 'torch' in sys.modules else 'no torch')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, check=False)
    assert done.stdout.strip() == "no torch", done.stderr


# --- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, key, hint", [
    (BucketSettings(500), "dataset.resolution", "496"),
    (BucketSettings(512, min_reso=640), "dataset.min_bucket_reso", "256"),
    (BucketSettings(512, max_reso=448), "dataset.max_bucket_reso", "1024"),
    (BucketSettings(512, reso_steps=0), "dataset.bucket_reso_steps", "64"),
    (BucketSettings(512, min_reso=250), "dataset.min_bucket_reso", "192"),
    (BucketSettings(512, max_reso=1000), "dataset.max_bucket_reso", "1024"),
])
def test_validate_names_the_key_and_the_value_to_use(settings, key, hint):
    with pytest.raises(ConfigError) as caught:
        settings.validate()
    assert caught.value.key == key
    assert key in str(caught.value)
    assert hint in caught.value.fix


def test_bucket_options_are_ignored_when_bucketing_is_off():
    BucketSettings(512, enabled=False, min_reso=250, max_reso=100).validate()
    with pytest.raises(ConfigError):
        bucket_resolutions(BucketSettings(512, min_reso=250))


# --- reporting --------------------------------------------------------------------------------

def test_bucket_counts_count_images_once_unless_asked():
    portrait, landscape = fit_bucket(900, 1600, S512), fit_bucket(1600, 900, S512)
    rows = bucket_counts([(portrait, 10), (portrait, 1), (landscape, 3)])
    assert rows == [((384, 640), 2), ((640, 384), 1)]
    with_repeats = bucket_counts([(portrait, 10), (portrait, 1), (landscape, 3)], with_repeats=True)
    assert with_repeats == [((384, 640), 11), ((640, 384), 3)]


def test_bucket_info_has_kohyas_json_shape():
    fits = [fit_bucket(1600, 900, S512), fit_bucket(900, 1600, S512), fit_bucket(900, 1600, S512),
            fit_bucket(1000, 1000, S512)]
    info = json.loads(json.dumps(bucket_info(fits)))
    assert info["buckets"] == {
        "0": {"resolution": [384, 640], "count": 2},
        "1": {"resolution": [512, 512], "count": 1},
        "2": {"resolution": [640, 384], "count": 1},
    }
    # 9:16 in 384x640 is off by |0.6 - 0.5625|, 16:9 in 640x384 by |1.667 - 1.778|, 1:1 by 0
    expected = (abs(640 / 384 - 16 / 9) + 2 * abs(0.6 - 0.5625) + 0) / 4
    assert info["mean_img_ar_error"] == pytest.approx(expected)
    with_repeats = bucket_info(fits, repeats=[5, 2, 2, 1])["buckets"]
    assert [b["count"] for b in with_repeats.values()] == [4, 1, 5]
    assert bucket_info([]) == {"buckets": {}, "mean_img_ar_error": 0.0}


def test_table_warns_about_a_bucket_smaller_than_the_batch():
    lines = format_bucket_table([((384, 640), 1, 3), ((512, 512), 12, 12)], batch_size=4)
    assert lines[0].split() == ["384x640", "1", "image", "3", "per", "epoch"]
    warning = lines[1]
    assert "384x640" in warning and "batch size 4" in warning and "only 3" in warning
    assert lines[2].split() == ["512x512", "12", "images", "12", "per", "epoch"]
    assert len(lines) == 3  # no warning for the full bucket
    # repeats fill the batch: one image trained 4 times per epoch is no warning
    assert len(format_bucket_table([((512, 512), 1, 4)], batch_size=4)) == 1


def test_fit_properties():
    fit = BucketFit(original=(1000, 500), bucket=(512, 256), resized=(512, 256))
    assert fit.kept_share == 1.0 and fit.aspect_error == 0.0 and not fit.upscaled
    assert fit.crop_box() == (0, 0, 512, 256)
