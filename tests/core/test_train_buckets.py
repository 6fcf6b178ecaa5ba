"""Training a kohya folder of real photographs: buckets, repeats, caption options and long
captions reach the model, the LoRA's metadata records them as kohya does, and the preview
shows the pixels training encodes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from safetensors import safe_open

from dataset_fixtures import make_kohya_folder
from lora_studio.core import events as ev
from lora_studio.core.dataset.preview import seen_samples_from_config, write_seen_samples
from lora_studio.core.train.config import config_from_dict
from lora_studio.core.train.data import prepare_training_set
from test_train_loop import run  # same folder (pytest puts it on sys.path)


@pytest.fixture(scope="module")
def kohya(tmp_path_factory) -> Path:
    return make_kohya_folder(tmp_path_factory.mktemp("kohya"))


def photo_config(model_dir, data, out, **sections):
    data = {
        "model": {"base": str(model_dir)},
        "dataset": {"path": str(data), "resolution": 128, "trigger_word": "zqcat"},
        "lora": {"rank": 2, "alpha": 2.0},
        "train": {"steps": 3, "batch_size": 2, "learning_rate": 1e-3, "seed": 3},
        "output": {"path": str(out), "name": "cat", "save_precision": "fp32"},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def logs(rec) -> str:
    return "\n".join(e.message for e in rec.of(ev.Log))


def test_a_kohya_folder_trains_in_buckets_and_the_lora_records_folders_and_buckets(
        tiny_model_dir, kohya, tmp_path):
    cfg = photo_config(tiny_model_dir, kohya, tmp_path / "out")
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal

    meta = metadata(cfg.lora_path)
    assert json.loads(meta["ss_dataset_dirs"]) == {
        "10_chelsea cat": {"n_repeats": 10, "img_count": 2},
        "1_astronaut": {"n_repeats": 1, "img_count": 1},
        "3_coffee": {"n_repeats": 3, "img_count": 2}}
    tags = json.loads(meta["ss_tag_frequency"])
    assert set(tags) == {"10_chelsea cat", "1_astronaut", "3_coffee"}
    assert tags["10_chelsea cat"]["chelsea cat"] == 1  # the uncaptioned image's class caption
    assert meta["ss_enable_bucket"] == "True" and meta["ss_bucket_no_upscale"] == "False"
    assert (meta["ss_min_bucket_reso"], meta["ss_max_bucket_reso"]) == ("64", "256")
    assert meta["ss_resolution"] == "(128, 128)" and meta["ss_num_train_images"] == "5"
    info = json.loads(meta["ss_bucket_info"])
    assert sum(b["count"] for b in info["buckets"].values()) == 27  # kohya counts repeats
    assert len(info["buckets"]) >= 2 and info["mean_img_ar_error"] >= 0
    text = logs(rec)
    assert "Buckets (about 128x128 pixels" in text and "per epoch" in text
    assert "Captions: 3 from caption files, 1 with an empty caption file, 1 from the kohya " \
        "folder class" in text
    assert "notes/ is not a kohya N_name folder" in text
    assert "1 caption(s) are longer than 75 tokens" in text
    assert "and their caption embeddings" in text  # nothing varies per step: cached


def test_every_batch_holds_one_bucket_size_in_training(tiny_model_dir, kohya, tmp_path):
    cfg = photo_config(tiny_model_dir, kohya, tmp_path / "out", train={"batch_size": 3})
    dataset = prepare_training_set(cfg, 1, lambda text, level: None)
    sizes = set()
    for number in range(3 * dataset.order.batches_in_epoch(0)):
        batch = dataset.order.batch(number)
        shapes = {tuple(dataset.data.pixels(s.index, s.flip).shape) for s in batch}
        assert len(shapes) == 1, shapes
        sizes |= shapes
    assert len(sizes) >= 2  # the photos really are in several buckets


def test_the_preview_shows_the_pixels_training_encodes(tiny_model_dir, kohya, tmp_path):
    import numpy as np
    from PIL import Image

    cfg = photo_config(tiny_model_dir, kohya, tmp_path / "out", dataset={
        "center_crop": False, "random_flip": True, "shuffle_caption": True, "keep_tokens": 1},
        train={"cache_latents": False, "seed": 11})
    dataset = prepare_training_set(cfg, 1, lambda text, level: None)
    seen = seen_samples_from_config(cfg, epoch=1)
    assert len(seen) == 5
    written = write_seen_samples(seen, tmp_path / "seen")
    assert len(written) == 15
    for number, sample in enumerate(seen, start=1):
        index = next(ex.index for ex in dataset.examples if ex.image_path == sample.image_path)
        trained = dataset.data.pixels(index, sample.flip, sample.position)
        shown = np.asarray(Image.open(tmp_path / "seen" /
                                      f"{number:03d}_{sample.image_path.stem}.train.png"))
        assert np.array_equal(((trained.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy(),
                              shown)
        assert dataset.data.caption(index, sample.position) == sample.caption
    # the crop drawn on the original is red where the crop's border is
    crop = seen[0].original_with_crop()
    left, top = (round(v * o / r) for v, o, r in zip(seen[0].crop_box[:2], seen[0].fit.original,
                                                       seen[0].fit.resized))
    assert crop.getpixel((left, top)) == (255, 64, 32)


def test_caption_options_are_drawn_per_sample_and_switch_the_text_cache_off(
        tiny_model_dir, kohya, tmp_path):
    cfg = photo_config(tiny_model_dir, kohya, tmp_path / "out", dataset={
        "shuffle_caption": True, "keep_tokens": 1, "caption_prefix": "zqcat,",
        "max_token_length": 150})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    text = logs(rec)
    assert "captions are encoded every step because shuffle_caption is on" in text
    assert "longer than" not in text  # 150 tokens read the long caption whole
    meta = metadata(cfg.lora_path)
    assert (meta["ss_shuffle_caption"], meta["ss_keep_tokens"]) == ("True", "1")
    assert meta["ss_max_token_length"] == "150" and meta["ss_caption_prefix"] == "zqcat,"

    dataset = prepare_training_set(cfg, 1, lambda text, level: None)
    chelsea = next(ex.index for ex in dataset.examples if ex.image_path.name == "chelsea.jpg")
    drawn = {dataset.data.caption(chelsea, p) for p in range(20)}
    assert len(drawn) > 1  # shuffled per sample
    assert all(c.startswith("zqcat, ") for c in drawn)  # the kept first tag stays first
    assert dataset.data.caption(chelsea, 7) == dataset.data.caption(chelsea, 7)  # per position


def test_save_every_n_epochs_writes_kohya_numbered_files_and_a_safetensors_path_is_the_file(
        tiny_model_dir, tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(0)
    for i in range(3):
        Image.new("RGB", (96, 64), tuple(rng.randrange(256) for _ in range(3))).save(
            data / f"{i}.png")
    cfg = photo_config(tiny_model_dir, data, tmp_path / "x", train={"max_train_epochs": 3,
                                                                     "batch_size": 1},
                       output={"save_every_n_epochs": 1,
                               "path": str(tmp_path / "loras" / "blob.safetensors")})
    assert (cfg.output.path, cfg.output.name) == (str(tmp_path / "loras"), "blob")
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    assert [e.step for e in rec.of(ev.StepProgress)][-1] == 9  # 3 epochs of 3 steps
    files = sorted(p.name for p in (tmp_path / "loras").glob("*.safetensors"))
    assert files == ["blob-000001.safetensors", "blob-000002.safetensors", "blob.safetensors"]
    assert (tmp_path / "loras" / "blob.safetensors").is_file()
    assert metadata(tmp_path / "loras" / "blob-000002.safetensors")["ss_steps"] == "6"


def test_a_resumed_bucketed_run_with_shuffled_captions_ends_as_an_unbroken_one(
        tiny_model_dir, kohya, tmp_path):
    from lora_studio.core.jobs import JobControl
    from test_train_loop import lora_tensors

    # 64 px buckets in steps of 32 (64x64, 32x128, 96x32, ...): several sizes, cheap steps
    settings = dict(train={"steps": 4, "batch_size": 2, "cache_latents": False},
                    dataset={"random_flip": True, "center_crop": False, "resolution": 64,
                             "bucket_reso_steps": 32, "shuffle_caption": True,
                             "caption_tag_dropout_rate": 0.2},
                    checkpoint={"every": 2})
    unbroken = photo_config(tiny_model_dir, kohya, tmp_path / "a", **settings)
    assert isinstance(run(unbroken).terminal, ev.Finished)
    stopped = photo_config(tiny_model_dir, kohya, tmp_path / "b", **settings)
    control = JobControl()
    rec = run(stopped, control, on_event=lambda e: isinstance(e, ev.StepProgress)
              and e.step == 2 and control.cancel())
    assert isinstance(rec.terminal, ev.Cancelled)
    assert "3 bucket size(s)" in logs(rec) or "bucket size(s)" not in logs(rec)
    rec = run(stopped, resume=tmp_path / "b" / "checkpoints" / "step-2")
    assert [e.step for e in rec.of(ev.StepProgress)] == [3, 4]
    a, b = lora_tensors(unbroken.lora_path), lora_tensors(stopped.lora_path)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
