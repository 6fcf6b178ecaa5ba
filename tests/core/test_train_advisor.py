"""The rank and steps advisor: its rules give the numbers the README states, every advised value
is one the config accepts, and `lora-studio advise DIR` advises from the real dataset scan."""

from __future__ import annotations

import json
import math
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from dataset_fixtures import make_kohya_folder
from lora_studio.cli import main
from lora_studio.core.errors import StudioError
from lora_studio.core.train.advisor import (
    CONCEPTS,
    SOURCES,
    advise,
    concept_kind,
    format_advice,
    value_rows,
)
from lora_studio.core.train.config import TrainConfig, apply_overrides
from lora_studio.core.train.presets import apply_defaults

REPO = Path(__file__).resolve().parents[2]
ARCHS = ("sd1", "sd2", "sd2-v", "sdxl")


def config(tmp_path: Path, arch: str = "sd1") -> TrainConfig:
    cfg = apply_defaults(TrainConfig(), arch)
    cfg.dataset.path = str(tmp_path)
    return cfg


# ----------------------------------------------------------------------------- rank and alpha
def test_style_with_40_images_gets_a_low_rank_and_alpha_equal_to_it():
    advice = advise(40, "style", "sd1")

    rank, alpha = advice.values["lora.rank"], advice.values["lora.alpha"]
    assert 4 <= rank <= 8 and rank <= alpha <= 2 * rank
    assert (rank, alpha) == (4, 4.0)
    assert advice.values["train.steps"] == 4000  # 40 images x 100 views, within 2000-4000


def test_concept_with_300_images_gets_the_high_end_of_its_band():
    advice = advise(300, "concept", "sd1")

    assert 16 <= advice.values["lora.rank"] <= 32
    assert advice.values["lora.rank"] == 32 and advice.values["lora.alpha"] == 32.0
    # 30000 views are capped at 4000 images seen; 10 passes (3000) are already met.
    assert advice.values["train.steps"] == 4000


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("concept", CONCEPTS)
def test_under_100_images_the_rank_is_never_above_8(concept, arch):
    for images in (1, 5, 20, 60, 99):
        assert advise(images, concept, arch).values["lora.rank"] <= 8
    # the cap is lifted at 100: a concept then gets its band's low end
    assert advise(100, "concept", arch).values["lora.rank"] == 16


def test_the_band_switches_to_its_high_end_at_200_images():
    ranks = {(kind, n): advise(n, kind).values["lora.rank"]
             for kind in CONCEPTS for n in (150, 199, 200, 5000)}
    assert ranks == {("style", 150): 4, ("style", 199): 4, ("style", 200): 8, ("style", 5000): 8,
                     ("subject", 150): 8, ("subject", 199): 8, ("subject", 200): 16,
                     ("subject", 5000): 16, ("concept", 150): 16, ("concept", 199): 16,
                     ("concept", 200): 32, ("concept", 5000): 32}


def test_sdxl_keeps_the_rank_and_says_why(tmp_path):
    for kind in CONCEPTS:
        for images in (30, 150, 400):
            assert advise(images, kind, "sdxl").values["lora.rank"] == \
                advise(images, kind, "sd1").values["lora.rank"]
    current = config(tmp_path, "sdxl")  # the SDXL defaults: rank 32, alpha 16
    advice = advise(25, "subject", "sdxl", current=current)
    sdxl = [r for r in advice.reasons if r.rule.startswith("SDXL")]
    assert len(sdxl) == 1 and "7.3x the parameters" in sdxl[0].rule
    assert sdxl[0].sources == ("measured", "holostrawberry")
    changes = {key: (now, new) for key, now, new in advice.changes(current)}
    assert changes["lora.rank"] == (32, 8) and changes["lora.alpha"] == (16.0, 8.0)


def test_alpha_reason_says_how_much_larger_the_updates_get():
    current = TrainConfig()
    current.lora.rank, current.lora.alpha = 16, 8.0  # scale 0.5
    alpha = [r for r in advise(40, "subject", current=current).reasons if r.topic == "alpha"]
    assert alpha[0].result == ("alpha 8 (alpha / rank = 1); now 0.5: at the same learning rate, "
                               "updates 2x as large")
    assert alpha[0].sources == ("hu2021", "diffusers")


# ----------------------------------------------------------------------------- steps
@pytest.mark.parametrize(("images", "kind", "seen"), [
    (5, "subject", 1500),  # 500 views raised to the subject window's 1500
    (20, "subject", 2000),  # 2000 views: within the window
    (40, "subject", 3000),  # 4000 views lowered to 3000
    (10, "style", 2000),
    (300, "style", 4000),  # lowered to 4000; 10 passes = 3000 met
    (1000, "style", 10000),  # 10 passes over 1000 images beat the window
])
def test_images_seen_follow_views_window_and_passes(images, kind, seen):
    advice = advise(images, kind)
    assert advice.images_seen == seen
    assert advice.values["train.steps"] == seen  # batch 1, no regularization images
    assert advice.values["train.max_train_epochs"] == 0


def test_steps_count_batches_accumulation_and_regularization(tmp_path):
    current = config(tmp_path)
    current.train.batch_size, current.train.gradient_accumulation = 3, 2
    advice = advise(20, "subject", current=current, images_per_epoch=200)
    assert advice.values["train.steps"] == math.ceil(2000 / 6) == 334
    steps = [r for r in advice.reasons if r.sources == ("kohya",)][0]
    assert steps.result == ("2000 images seen = 10.0 epochs of 200 images; 2000 / batch 6 = "
                            "334 steps")
    current.dataset.reg_path = str(tmp_path / "reg")  # as many reg images as dataset images
    assert advise(20, "subject", current=current).values["train.steps"] == 667


def test_a_config_that_trains_epochs_gets_epochs(tmp_path):
    current = config(tmp_path)
    current.train.max_train_epochs = 5
    advice = advise(20, "subject", current=current, images_per_epoch=60)  # kohya 3_name folder
    assert "train.steps" not in advice.values
    assert advice.values["train.max_train_epochs"] == round(2000 / 60) == 33
    # the dataset's repeats count when no per-epoch figure is given
    current.dataset.repeats = 10
    assert advise(20, "subject", current=current).values["train.max_train_epochs"] == 10


# ----------------------------------------------------------------------------- validity
@pytest.mark.parametrize("arch", ARCHS)
def test_every_advice_applies_to_a_config_that_validates(tmp_path, arch):
    for kind in CONCEPTS:
        for images in (1, 7, 99, 100, 250, 20_000):
            current = config(tmp_path, arch)
            before = current.to_dict()
            applied = advise(images, kind, arch, current=current).apply(current)
            applied.validate()
            assert current.to_dict() == before  # a copy: the current config is left alone
            assert applied.lora.alpha >= applied.lora.rank and applied.train.steps >= 1500


def test_huge_datasets_stay_within_the_declared_step_range():
    advice = advise(5_000_000, "style")
    assert advice.values["train.steps"] == 10_000_000  # train.steps' declared maximum


def test_overrides_and_toml_give_the_same_config_as_apply(tmp_path):
    current = config(tmp_path, "sdxl")
    advice = advise(64, "concept", "sdxl", current=current)
    applied = advice.apply(current)
    via_set = apply_overrides(config(tmp_path, "sdxl"), advice.overrides())
    assert via_set.to_dict() == applied.to_dict()
    assert tomllib.loads(advice.to_toml()) == {
        "lora": {"rank": 8, "alpha": 8.0}, "train": {"steps": 4000, "max_train_epochs": 0}}
    assert (applied.lora.rank, applied.lora.alpha, applied.train.steps) == (8, 8.0, 4000)


def test_advice_is_deterministic_and_concepts_have_aliases():
    assert advise(33, "character", "sdxl") == advise(33, "subject", "sdxl")
    assert [concept_kind(c) for c in ("Style", "person", "object", "pose")] == [
        "style", "subject", "subject", "concept"]


@pytest.mark.parametrize(("args", "what"), [
    ((0, "style"), "No usable images"),
    ((10, "landscape"), "Unknown kind of concept 'landscape'"),
    ((10, "style", "sd3"), "Unknown base architecture 'sd3'"),
])
def test_what_cannot_be_advised_says_what_to_do(args, what):
    with pytest.raises(StudioError) as err:
        advise(*args)
    assert err.value.what.startswith(what) and err.value.fix


# ----------------------------------------------------------------------------- reasons
def test_reasons_name_every_rule_with_its_number_and_source():
    advice = advise(30, "concept", "sdxl")
    text = [r.text() for r in advice.reasons]
    assert text == [
        "Concept: rank 16-32, the low end under 200 images, the high end from 200 -> 30 images: "
        "rank 16 [community, studio]",
        "Under 100 images, rank at most 8 (a small rank suffices; a large one memorises few "
        "images) -> rank 8 (not 16) [community, hu2021]",
        "SDXL: not raised; at the same rank its LoRA holds 7.3x the parameters of an SD 1.x one "
        "-> rank 8 [measured, holostrawberry]",
        "Alpha = rank: the update is scaled by alpha / rank, and rank to 2 x rank is usual -> "
        "alpha 8 (alpha / rank = 1) [hu2021, diffusers]",
        "About 100 views of each image -> 30 x 100 = 3000 images seen [dreambooth-ext]",
        "Concept: 2000-4000 images seen in all -> within it [holostrawberry, community]",
        "At least 10 passes over every image -> 300 or more: met [holostrawberry]",
        "Steps = images x repeats x epochs / batch size -> 3000 images seen = 100.0 epochs of 30 "
        "images; 3000 / batch 1 = 3000 steps [kohya]",
    ]
    assert {tag for r in advice.reasons for tag in r.sources} == set(SOURCES)


def test_every_source_tag_is_explained_in_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n##+ ", readme.split("### Rank and steps advisor\n", 1)[1])[0]
    for tag in SOURCES:
        assert f"`{tag}`" in section, tag


def test_text_shows_current_and_advised_values(tmp_path):
    current = config(tmp_path)  # SD 1.x defaults: rank 16, alpha 8, 1600 steps
    advice = advise(40, "style", current=current)
    assert value_rows(advice, current) == [("Rank", "16", "4"), ("Alpha", "8", "4"),
                                           ("Steps", "1600", "4000")]
    text = format_advice(advice, current)
    assert "  Rank: 4  (now 16)" in text and "  Steps: 4000  (now 1600)" in text
    assert "[hu2021] Hu et al. 2021, LoRA" in text


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture
def kohya_train(tmp_path) -> Path:
    """5 usable images, 27 per epoch (10_, 3_ and 1_ folders)."""
    return make_kohya_folder(tmp_path)


def test_cli_advises_from_the_scanned_kohya_folder(kohya_train, capsys):
    assert main(["advise", str(kohya_train), "--concept", "subject"]) == 0

    out = capsys.readouterr().out
    assert "Advice for a subject LoRA on SD 1.x: 5 images, 27 per epoch with repeats" in out
    assert "  Rank: 8\n  Alpha: 8\n  Steps: 1500\n" in out
    assert "1500 images seen = 55.6 epochs of 27 images" in out
    assert "SD 1.x was assumed" in out
    assert out.strip().endswith("Use it: --set lora.rank=8 --set lora.alpha=8 "
                                "--set train.steps=1500 --set train.max_train_epochs=0")


def test_cli_toml_and_set_output_paste_into_a_config(kohya_train, capsys):
    assert main(["advise", str(kohya_train), "--concept", "style", "--arch", "sdxl",
                 "--format", "toml"]) == 0
    assert tomllib.loads(capsys.readouterr().out) == {
        "lora": {"rank": 4, "alpha": 4.0}, "train": {"steps": 2000, "max_train_epochs": 0}}

    assert main(["advise", str(kohya_train), "--concept", "pose", "--batch-size", "2",
                 "--format", "set"]) == 0
    args = capsys.readouterr().out.split()
    overrides = args[1::2]
    assert args[0::2] == ["--set"] * 4
    cfg = apply_overrides(config(kohya_train), overrides)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.train.steps) == (8, 8.0, 1000)


def test_cli_reads_the_architecture_of_the_model_and_the_config(kohya_train, tmp_path, capsys):
    model = shutil.copytree(REPO / "resources" / "configs" / "sdxl", tmp_path / "xl-model")
    toml = tmp_path / "train.toml"
    toml.write_text(f'[dataset]\npath = "{kohya_train.as_posix()}"\n[lora]\nrank = 64\n'
                    'alpha = 32.0\n[train]\nmax_train_epochs = 4\n', encoding="utf-8")

    assert main(["advise", "--config", str(toml), "--concept", "concept", "--model", str(model),
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["arch"] == "sdxl" and data["images"] == 5 and data["images_per_epoch"] == 27
    assert data["values"] == {"lora.rank": 8, "lora.alpha": 8.0, "train.max_train_epochs": 74}

    assert main(["advise", "--config", str(toml), "--concept", "concept"]) == 0
    out = capsys.readouterr().out
    assert "  Rank: 8  (now 64)" in out and "  Epochs: 74  (now 4)" in out


def test_cli_with_nothing_usable_says_so(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no images here", encoding="utf-8")
    assert main(["advise", str(tmp_path), "--concept", "style"]) == 2
    assert "Nothing usable to advise on" in capsys.readouterr().out
