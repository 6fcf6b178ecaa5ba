"""The dataset doctor on real photos: duplicates, look-alikes, hard crops, caption problems, tags."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_fixtures import PHOTOS_DIR, make_kohya_folder
from PIL import Image

from lora_studio.core.dataset import doctor as dd
from lora_studio.core.dataset.plan import plan_from_config
from lora_studio.core.train.config import TrainConfig, apply_overrides

REPO = Path(__file__).resolve().parents[2]
PHOTOS = sorted(PHOTOS_DIR.glob("*.jpg"))


def diagnose(folder: Path, *overrides: str) -> dd.DoctorReport:
    cfg = apply_overrides(TrainConfig(), [f"dataset.path={folder}", *overrides])
    return dd.diagnose(plan_from_config(cfg))


def names(finding: dd.Finding) -> tuple[str, ...]:
    return tuple(p.name for p in finding.images)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """The six test photos, plus copies of chelsea.jpg and a 5:1 / 1:5 strip of two others."""
    folder = tmp_path_factory.mktemp("photos")
    for photo in PHOTOS:
        shutil.copyfile(photo, folder / photo.name)
    shutil.copyfile(PHOTOS_DIR / "chelsea.jpg", folder / "chelsea copy.jpg")  # same bytes
    with Image.open(PHOTOS_DIR / "chelsea.jpg") as cat:
        cat.save(folder / "chelsea.png")  # other bytes, the same pixels
        cat.resize((300, 200), Image.Resampling.LANCZOS).save(
            folder / "chelsea small.jpg", quality=60)  # resized and recompressed
    with Image.open(PHOTOS_DIR / "coffee.jpg") as coffee:
        coffee.crop((0, 140, 600, 260)).save(folder / "coffee strip.jpg", quality=90)  # 5:1
    with Image.open(PHOTOS_DIR / "rocket.jpg") as rocket:
        rocket.crop((280, 27, 360, 427)).save(folder / "rocket strip.jpg", quality=90)  # 1:5
    return folder


@pytest.fixture(scope="module")
def photo_report(photo_folder) -> dd.DoctorReport:
    return diagnose(photo_folder)


def test_different_photos_are_far_beyond_the_near_duplicate_distance():
    # Measured: any two of the six photos are 26 (coffee / camera_16x9_gray) to 40 bits apart;
    # a resized, recompressed copy is 0 apart. The threshold (8) sits with a wide margin.
    prints = dd.fingerprints(PHOTOS)
    assert all(isinstance(fp, dd.Fingerprint) for fp in prints)
    distances = [dd.hamming(a.phash, b.phash) for a, b in itertools.combinations(prints, 2)]
    assert len(distances) == 15
    assert min(distances) >= 3 * dd.NEAR_DUPLICATE_DISTANCE


def test_exact_copies_are_one_group_whatever_the_file_bytes(photo_report):
    (group,) = photo_report.of(dd.EXACT_DUPLICATE)
    assert names(group) == ("chelsea copy.jpg", "chelsea.jpg", "chelsea.png")
    assert "keep one" in group.message


def test_a_resized_recompressed_copy_is_a_near_duplicate_reported_once(photo_report):
    (pair,) = photo_report.of(dd.NEAR_DUPLICATE)  # not once per exact copy, no other photo
    assert names(pair) == ("chelsea copy.jpg", "chelsea small.jpg")
    assert pair.details["distance"] <= dd.NEAR_DUPLICATE_DISTANCE // 2
    assert "look alike" in pair.message


def test_a_panorama_is_flagged_with_how_much_training_keeps(photo_report):
    extreme = {names(f)[0]: f for f in photo_report.of(dd.EXTREME_ASPECT)}
    assert set(extreme) == {"coffee strip.jpg", "rocket strip.jpg"}
    wide = extreme["coffee strip.jpg"]
    # 600x120 at 512 px: the widest bucket is 1024x256 (4:1), the strip is resized to 1280x256.
    assert wide.details["bucket"] == [1024, 256]
    assert wide.details["kept_share"] == pytest.approx(0.8)
    assert "5.00:1" in wide.message and "keeps 80%" in wide.message
    assert "taller than the tallest bucket" in extreme["rocket strip.jpg"].message


def test_with_buckets_off_only_what_a_square_crop_halves_is_extreme(photo_folder):
    report = diagnose(photo_folder, "dataset.enable_bucket=false")
    flagged = {names(f)[0]: f.details["kept_share"] for f in report.of(dd.EXTREME_ASPECT)}
    assert flagged == {"coffee strip.jpg": pytest.approx(0.2),
                       "rocket strip.jpg": pytest.approx(0.2)}


def test_upscaled_images_come_from_the_plan(photo_report):
    upscaled = {names(f)[0] for f in photo_report.of(dd.UPSCALED)}
    assert upscaled == {item.image_path.name for item, _ in photo_report.plan.upscaled()}
    assert "chelsea small.jpg" in upscaled


def test_kohya_folder_caption_problems_and_tag_table(tmp_path):
    from dataset_fixtures import LONG_CAPTION

    report = diagnose(make_kohya_folder(tmp_path))
    by_kind = {kind: [names(f) for f in report.of(kind)] for kind in dd.KINDS}
    assert by_kind[dd.MISSING_CAPTION] == [("rocket.jpg",)]
    assert by_kind[dd.EMPTY_CAPTION] == [("hubble_9x16.jpg",)]
    assert by_kind[dd.LONG_CAPTION] == [("long caption.jpg",)]
    assert by_kind[dd.EXACT_DUPLICATE] == by_kind[dd.NEAR_DUPLICATE] == []
    (missing,) = report.of(dd.MISSING_CAPTION)
    assert 'kohya folder class "chelsea cat"' in missing.message and "rocket.txt" in missing.message
    (long,) = report.of(dd.LONG_CAPTION)
    assert long.details == {"tokens": 123, "kept": 75}
    assert "max_token_length" in long.message

    table = dict(report.tags)
    counts = [n for _, n in report.tags]
    assert counts == sorted(counts, reverse=True)
    assert report.tags[:2] == [("photo (medium)", 3), ("realistic", 3)]  # in all 3 captions
    assert table["no humans"] == 2 and table["chelsea cat"] == 1  # rocket's folder class
    assert table["highres"] == 1 and LONG_CAPTION.endswith("highres")


def test_findings_are_json_with_paths_a_tab_can_select(photo_report):
    data = json.loads(json.dumps(photo_report.to_dict()))
    kinds = {f["kind"] for f in data["findings"]}
    assert {dd.EXACT_DUPLICATE, dd.NEAR_DUPLICATE, dd.EXTREME_ASPECT} <= kinds
    assert all(Path(p).is_file() for f in data["findings"] for p in f["images"])
    assert data["near_duplicate_distance"] == dd.NEAR_DUPLICATE_DISTANCE


def test_perceptual_hash_ignores_size_and_format_but_not_content():
    with Image.open(PHOTOS_DIR / "astronaut.jpg") as img:
        rgb = img.convert("RGB")
    assert dd.perceptual_hash(rgb) == dd.perceptual_hash(rgb.resize((128, 128)))
    mirrored = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert dd.hamming(dd.perceptual_hash(rgb), dd.perceptual_hash(mirrored)) > \
        dd.NEAR_DUPLICATE_DISTANCE


def test_cli_doctor_prints_findings_and_json(photo_folder):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "lora_studio", "dataset", "doctor",
                             str(photo_folder), "--json"], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    exact = [f for f in data["findings"] if f["kind"] == dd.EXACT_DUPLICATE]
    assert [sorted(Path(p).name for p in f["images"]) for f in exact] == [
        ["chelsea copy.jpg", "chelsea.jpg", "chelsea.png"]]
    assert data["tags"] == []  # no caption files, no default caption


def test_an_image_gone_since_the_check_is_a_finding_not_a_crash(tmp_path):
    for photo in PHOTOS[:3]:
        shutil.copyfile(photo, tmp_path / photo.name)
    cfg = apply_overrides(TrainConfig(), [f"dataset.path={tmp_path}"])
    plan = plan_from_config(cfg)
    (tmp_path / PHOTOS[0].name).unlink()
    report = dd.diagnose(plan)
    (gone,) = [f for f in report.of(dd.SKIPPED)]
    assert names(gone) == (PHOTOS[0].name,) and "could not be read again" in gone.message


def test_cli_help_states_the_default_distance():
    from lora_studio.cli import build_parser

    dataset = build_parser()._subparsers._group_actions[0].choices["dataset"]
    doctor = dataset._subparsers._group_actions[0].choices["doctor"]
    assert f"(default {dd.NEAR_DUPLICATE_DISTANCE})" in " ".join(doctor.format_help().split())
