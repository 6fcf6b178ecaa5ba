"""A kohya folder of real photographs as an artist brings it: folders and repeats, captions
from every source, buckets, the epoch arithmetic and long captions, as `dataset check` reports
them and training plans them (one plan for both)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset_fixtures import make_kohya_folder
from lora_studio.core.dataset.buckets import BucketSettings
from lora_studio.core.dataset.checks import check_dataset
from lora_studio.core.dataset.order import DataOrder, Example
from lora_studio.core.dataset.plan import format_plan, plan_dataset, plan_from_config
from lora_studio.core.errors import ConfigError
from lora_studio.core.train.config import config_from_dict, load_config

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


@pytest.fixture(scope="module")
def kohya(tmp_path_factory) -> Path:
    return make_kohya_folder(tmp_path_factory.mktemp("kohya"))


def test_the_kohya_parent_folder_trains_each_n_name_folder_n_times(kohya):
    report = check_dataset(kohya, trigger_word="zqcat")

    assert report.layout == "kohya"
    assert [(s.path.name, s.repeats, s.images) for s in report.subsets] == [
        ("10_chelsea cat", 10, 2), ("1_astronaut", 1, 1), ("3_coffee", 3, 2)]
    assert report.images_per_epoch == 27
    by_name = {i.image_path.name: i for i in report.items}
    # no caption file: the folder's class, not the trigger word and never empty
    assert (by_name["rocket.jpg"].caption, by_name["rocket.jpg"].caption_source) == (
        "chelsea cat", "kohya folder class")
    # Windows-1252: read (the image trains) and named in a warning
    assert by_name["coffee.jpg"].caption.startswith("café")
    assert any("coffee.txt is not UTF-8" in w for w in report.warnings)
    # an empty caption file is an empty caption, said so
    assert by_name["hubble_9x16.jpg"].caption_source == "empty caption file"
    assert any("empty caption file (hubble_9x16.jpg)" in w for w in report.warnings)
    # the folder without N_ is not trained, and the report says how to train it
    assert "camera_16x9_gray.jpg" not in by_name
    assert any("notes/ is not a kohya N_name folder" in w and "1_notes" in w
               for w in report.warnings)


def test_listed_subsets_each_with_their_own_settings(kohya, tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text(f'''
[dataset]
resolution = 512
[[dataset.subsets]]
path = "{kohya / '10_chelsea cat'}"
repeats = 4
default_caption = "a cat"
[[dataset.subsets]]
path = "{kohya / '3_coffee'}"
[output]
path = "{tmp_path / 'out'}"
''', encoding="utf-8")
    cfg = load_config(toml)
    plan = plan_from_config(cfg, check_captions=False)

    report = plan.report
    assert report.layout == "subsets"
    assert [(s.path.name, s.repeats) for s in report.subsets] == [
        ("10_chelsea cat", 4), ("3_coffee", 1)]
    by_name = {i.image_path.name: i for i in report.items}
    assert (by_name["rocket.jpg"].caption, by_name["rocket.jpg"].caption_source) == (
        "a cat", "folder default caption")
    assert report.images_per_epoch == 4 * 2 + 2
    assert "10_chelsea cat    4 x 2 images = 8 per epoch" in format_plan(plan)


def test_subset_tables_are_checked_key_by_key(tmp_path):
    base = {"output": {"path": str(tmp_path)}}
    with pytest.raises(ConfigError, match=r"dataset.subsets\[1\].num_repeats: unknown key"):
        config_from_dict({"dataset": {"subsets": [{"path": "a", "num_repeats": 2}]}, **base})
    with pytest.raises(ConfigError, match=r"dataset.subsets\[2\].path: is missing"):
        config_from_dict({"dataset": {"subsets": [{"path": "a"}, {"repeats": 2}]}, **base})
    with pytest.raises(ConfigError, match=r"dataset.subsets\[1\].repeats: must be >= 1"):
        config_from_dict({"dataset": {"subsets": [{"path": "a", "repeats": 0}]}, **base})
    cfg = config_from_dict({"dataset": {"subsets": [{"path": "imgs"}]}, **base},
                           base_dir=tmp_path)
    assert cfg.dataset.subsets == [{"path": str(tmp_path / "imgs"), "repeats": 1,
                                    "default_caption": ""}]


def test_the_plan_says_what_training_does_buckets_steps_upscales_long_captions(kohya):
    report = check_dataset(kohya)
    plan = plan_dataset(report, settings=BucketSettings(512), batch_size=2, steps=100)

    rows = {bucket: (n, per_epoch) for bucket, n, per_epoch in plan.bucket_rows()}
    assert rows == {(640, 384): (3, 23), (512, 512): (1, 1), (384, 640): (1, 3)}
    # batches are drawn within buckets: 23 -> 12 batches, 1 -> 1, 3 -> 2
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (15, 15, 100)
    assert {i.image_path.name for i, _ in plan.upscaled()} == {
        "chelsea.jpg", "coffee.jpg", "hubble_9x16.jpg"}
    [long] = plan.long_captions
    assert (long.item.image_path.name, long.tokens, long.kept) == ("long caption.jpg", 123, 75)
    assert long.first_dropped_tag == "american flag"
    text = format_plan(plan)
    assert "! 512x512 has 1 sample(s) per epoch, fewer than the batch size 2" in text
    assert "15 batches = 15 steps per epoch; 100 steps = 6.7 epochs" in text
    assert 'long caption.jpg: 75 of 123 tokens kept, cut from "american flag"' in text
    # read whole at 150 tokens: nothing to report
    assert plan_dataset(report, settings=BucketSettings(512),
                        max_token_length=150).long_captions == []


def test_max_train_epochs_sets_the_steps_from_the_epoch_arithmetic(kohya):
    plan = plan_dataset(check_dataset(kohya), settings=BucketSettings(512), batch_size=2,
                        gradient_accumulation=2, steps=100, max_train_epochs=3,
                        check_captions=False)
    assert plan.steps_per_epoch == 8  # 15 batches, two per optimizer step
    assert plan.total_steps == 24


def test_a_small_image_is_trained_upscaled_not_skipped_by_check_or_training(tmp_path):
    from PIL import Image

    Image.open(PHOTOS / "chelsea.jpg").resize((120, 80)).save(tmp_path / "small.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "tiny.png")  # below the 64 px floor
    cfg = config_from_dict({"dataset": {"path": str(tmp_path), "resolution": 512},
                            "output": {"path": str(tmp_path / "out")}})
    plan = plan_from_config(cfg, check_captions=False)
    assert [i.image_path.name for i in plan.report.items] == ["small.png"]
    assert [s.path.name for s in plan.report.skipped] == ["tiny.png"]
    assert [(i.image_path.name, f.bucket) for i, f in plan.upscaled()] == [
        ("small.png", (640, 384))]


def test_batches_hold_one_bucket_and_an_epoch_draws_every_slot_once():
    buckets = [(512, 512), (640, 384), (384, 640)]
    examples = [Example(i, Path(f"{i}.png"), "c", repeats=1 + i % 3, bucket=buckets[i % 3])
                for i in range(10)]
    order = DataOrder(examples, batch_size=3, seed=7, random_flip=True)
    for epoch in range(3):
        start = sum(order.batches_in_epoch(e) for e in range(epoch))
        batches = [order.batch(start + k) for k in range(order.batches_in_epoch(epoch))]
        assert all(len({examples[s.index].bucket for s in b}) == 1 for b in batches)
        drawn = sorted(s.index for b in batches for s in b)
        assert drawn == sorted(ex.index for ex in examples for _ in range(ex.repeats))
        assert {s.epoch for b in batches for s in b} == {epoch}
        assert len({s.position for b in batches for s in b}) == order.samples_per_epoch
    again = DataOrder(examples, batch_size=3, seed=7, random_flip=True)
    assert [again.batch(n) for n in (40, 3, 17)] == [order.batch(n) for n in (40, 3, 17)]


def test_one_bucket_draws_the_seeded_shuffle_itself():
    """Without buckets (one size), batches are the epoch's shuffle cut in order: a run trains on
    the images it trained on before buckets existed."""
    import random

    examples = [Example(i, Path(f"{i}.png"), "c", repeats=2, bucket=(64, 64)) for i in range(5)]
    order = DataOrder(examples, batch_size=2, seed=3, random_flip=False)
    slots = [i for i in range(5) for _ in range(2)]
    for epoch in range(2):
        shuffle = list(range(10))
        random.Random(f"order:3:{epoch}").shuffle(shuffle)
        drawn = [s.index for k in range(5) for s in order.batch(epoch * 5 + k)]
        assert drawn == [slots[k] for k in shuffle]


def test_dataset_check_json_has_the_training_plan(kohya, tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "lora_studio", "dataset", "check",
                             str(kohya), "--json", "--batch-size", "2",
                             "--set", "train.max_train_epochs=2"],
                            capture_output=True, text=True, cwd=repo, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["images_per_epoch"] == 27 and data["layout"] == "kohya"
    assert data["training"]["steps_per_epoch"] == 15
    assert data["training"]["total_steps"] == 30
    assert [s["repeats"] for s in data["subsets"]] == [10, 1, 3]


def test_bucket_settings_are_checked_with_the_key_and_automatic_ranges_follow_resolution(
        tmp_path):
    base = {"output": {"path": str(tmp_path)}}
    with pytest.raises(ConfigError, match="dataset.min_bucket_reso"):
        config_from_dict({"dataset": {"path": "a", "min_bucket_reso": 100}, **base})
    with pytest.raises(ConfigError, match="dataset.max_bucket_reso"):
        config_from_dict({"dataset": {"path": "a", "max_bucket_reso": 256}, **base})
    for resolution, expected in ((512, (256, 1024)), (1024, (512, 2048)), (768, (384, 1536))):
        cfg = config_from_dict({"dataset": {"path": "a", "resolution": resolution}, **base})
        settings = cfg.bucket_settings()
        assert (settings.min_reso, settings.max_reso) == expected and settings.enabled
    # below one 64 px bucket step there is only the square: buckets are off, and said so
    tiny = config_from_dict({"dataset": {"path": "a", "resolution": 32}, **base})
    assert not tiny.bucket_settings().enabled
