"""Regularization images (kohya's reg_data_dir + prior_loss_weight): pictures of what a LoRA
should leave alone, trained beside the dataset."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

from lora_studio.core.dataset.buckets import BucketSettings
from lora_studio.core.errors import ConfigError, DatasetError
from lora_studio.core.train.data import DataOrder, Example, load_regularization
from lora_studio.core.train.objective import diffusion_loss
from tests.core.test_train_loop import make_config, make_dataset, run

SQUARE = BucketSettings(64, enabled=False)
REG_CAPTIONS = ["a red circle", "a green circle", "a blue circle", "a yellow circle"]
REG_COLORS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40)]


def make_reg(folder: Path, count: int = 6) -> Path:
    """Circles on black (not the dataset's stars on white), captioned without the trigger."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = Image.new("RGB", (64, 64), (10, 10, 12))
        ImageDraw.Draw(img).ellipse((12 + i, 14, 46 + i, 48), fill=REG_COLORS[i % 4])
        img.save(folder / f"reg_{i}.png")
        (folder / f"reg_{i}.txt").write_text(REG_CAPTIONS[i % 4])
    return folder


def _examples(train: int, reg: int, reg_repeats: int = 1, repeats: int = 1) -> list[Example]:
    out = [Example(i, Path(f"t{i}.png"), "zqstar", repeats) for i in range(train)]
    out += [Example(train + j, Path(f"r{j}.png"), "a circle", reg_repeats, regularization=True)
            for j in range(reg)]
    return out


def test_each_epoch_draws_as_many_regularization_samples_as_dataset_samples():
    examples = _examples(train=4, reg=3, repeats=2)
    order = DataOrder(examples, batch_size=1, seed=5, random_flip=False)
    assert order.samples_per_epoch == 16  # 4 images x 2 repeats, plus 8 regularization slots
    for epoch in range(3):
        seen = Counter(order.batch(epoch * 16 + k)[0].index for k in range(16))
        assert all(seen[i] == 2 for i in range(4)), seen  # the dataset as without reg
        assert sum(seen[i] for i in range(4, 7)) == 8, seen


def test_a_regularization_pool_larger_than_the_dataset_is_used_in_full_over_the_epochs():
    examples = _examples(train=2, reg=10)
    order = DataOrder(examples, batch_size=1, seed=1, random_flip=False)
    reg_seen = Counter(i for p in range(4 * 5) if (i := order.batch(p)[0].index) >= 2)
    assert sorted(reg_seen) == list(range(2, 12))  # 5 epochs x 2 reg slots: all 10 images
    assert set(reg_seen.values()) == {1}


def test_data_order_with_regularization_is_a_pure_function_of_the_position():
    examples = _examples(train=3, reg=4, reg_repeats=2)
    first = DataOrder(examples, batch_size=1, seed=9, random_flip=True)
    again = DataOrder(examples, batch_size=1, seed=9, random_flip=True)
    batches = [37, 2, 18, 2, 55, 0]
    assert [first.batch(b) for b in batches] == [again.batch(b) for b in batches]
    assert {s.flip for b in range(40) for s in first.batch(b)} == {False, True}


def test_kohya_class_folders_caption_uncaptioned_images_and_bad_files_are_reported(tmp_path):
    root = tmp_path / "reg"
    (root / "2_red circle").mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(root / "2_red circle" / "a.png")  # class caption
    Image.new("RGB", (64, 64), "blue").save(root / "b.png")  # no caption, no class: skipped
    Image.new("RGB", (64, 64), "green").save(root / "c.png")
    (root / "c.txt").write_text("zqstar, a green square")  # the trigger word: warned
    (root / "d.png").write_bytes(b"not a png")  # broken: skipped
    reg = load_regularization(root, caption_extension=".txt", min_size=32, trigger="zqstar",
                              first_index=10, settings=SQUARE)
    captions = {ex.image_path.name: (ex.caption, ex.repeats, ex.index) for ex in reg.examples}
    # the folder's own images first, then its kohya folders
    assert captions == {"a.png": ("red circle", 2, 11), "c.png": ("zqstar, a green square", 1,
                                                                   10)}
    assert all(ex.regularization for ex in reg.examples)
    skipped = "\n".join(reg.skipped)
    assert "b.png" in skipped and "b.txt" in skipped and "d.png" in skipped
    assert len(reg.warnings) == 2
    assert "b.png" not in reg.warnings[0] and "beside kohya N_name folders" in reg.warnings[0]
    assert "trigger word 'zqstar'" in reg.warnings[1]
    assert reg.folders == {"2_red circle": {"n_repeats": 2, "img_count": 1},
                           "reg": {"n_repeats": 1, "img_count": 1}}


def test_a_regularization_folder_without_usable_images_fails_with_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        load_regularization(tmp_path / "empty", caption_extension=".txt", min_size=32,
                            trigger="zqstar", first_index=0, settings=SQUARE)
    assert "reg_path" in err.value.user_message()
    with pytest.raises(DatasetError) as err:
        load_regularization(tmp_path / "missing", caption_extension=".txt", min_size=32,
                            trigger="zqstar", first_index=0, settings=SQUARE)
    assert err.value.what.startswith("Regularization images (dataset.reg_path): ")
    assert "does not exist" in err.value.what


def test_regularization_folder_settings_are_checked(tiny_model_dir, tmp_path):
    data = make_dataset(tmp_path / "data")
    with pytest.raises(ConfigError) as err:
        make_config(tiny_model_dir, data, tmp_path / "out", dataset={"reg_path": str(data)})
    assert "dataset.reg_path" in str(err.value)
    with pytest.raises(ConfigError) as err:
        make_config(tiny_model_dir, data, tmp_path / "out", train={"prior_loss_weight": -1.0})
    assert "train.prior_loss_weight" in str(err.value)


def test_per_sample_loss_weights_scale_each_sample():
    pred = torch.zeros(3, 4, 2, 2)
    target = torch.stack([torch.full((4, 2, 2), v) for v in (1.0, 2.0, 3.0)])
    plain = diffusion_loss(pred, target, None, torch.zeros(3))
    weighted = diffusion_loss(pred, target, None, torch.zeros(3), weights=torch.tensor(
        [1.0, 0.0, 0.5]))
    assert plain.item() == pytest.approx((1 + 4 + 9) / 3)
    assert weighted.item() == pytest.approx((1 + 0 + 4.5) / 3)


def _train_with_reg(model_dir, tmp_path, **train):
    """A short run on the star dataset with the circles as regularization images."""
    data = make_dataset(tmp_path / "data")
    reg = make_reg(tmp_path / "reg")
    cfg = make_config(model_dir, data, tmp_path / "out",
                      dataset={"trigger_word": "zqstar", "reg_path": str(reg)}, train=train)
    rec = run(cfg)
    assert rec.terminal.__class__.__name__ == "Finished", rec.events[-1]
    return cfg, rec


def test_regularization_samples_are_drawn_half_the_time_and_weighted_by_prior_loss_weight(
        tiny_model_dir, tmp_path):
    from lora_studio.core import events as ev

    cfg, rec = _train_with_reg(tiny_model_dir, tmp_path, steps=16, batch_size=1,
                               prior_loss_weight=0.0)
    losses = [e.loss for e in rec.of(ev.StepProgress)]
    assert len(losses) == 16
    # batch 1: a step on a regularization image weighs 0 here, a step on a star does not
    examples = _examples(train=4, reg=6)
    order = DataOrder(examples, batch_size=1, seed=cfg.train.seed, random_flip=False)
    is_reg = [order.batch(step)[0].index >= 4 for step in range(16)]
    assert sum(is_reg) == 8  # two epochs of 4 stars + 4 regularization images
    assert [loss == 0.0 for loss in losses] == is_reg, losses


def test_training_with_regularization_images_records_them_as_kohya_does(tiny_model_dir,
                                                                        tmp_path):
    cfg, rec = _train_with_reg(tiny_model_dir, tmp_path, steps=4, batch_size=2,
                               prior_loss_weight=0.5)
    messages = [getattr(e, "message", "") for e in rec.events]
    assert any("Regularization: 6 images" in m and "weight 0.5" in m for m in messages)
    assert any("on 4 images (+ 6 regularization)" in m for m in messages)
    with safe_open(str(cfg.lora_path), "pt") as f:
        meta = f.metadata()
    assert meta["ss_num_train_images"] == "4" and meta["ss_num_reg_images"] == "6"
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {"reg": {"n_repeats": 1, "img_count": 6}}
    assert float(meta["ss_prior_loss_weight"]) == 0.5
    tags = json.loads(meta["ss_tag_frequency"])["data"]
    assert tags["zqstar"] == 4 and "a red circle" not in tags  # the dataset's tags only
