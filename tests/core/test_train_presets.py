"""Defaults that follow the base model's architecture (core/train/presets.py): each family
starts at its own resolution and with settings that make a valid config; the built-in Tiny
Shapes model keeps the quickstart recipe; a value the person chose is kept."""

from __future__ import annotations

import pytest

from lora_studio.core.models.architecture import ARCHITECTURES
from lora_studio.core.train import presets
from lora_studio.core.train.config import TrainConfig, describe_keys, load_config
from lora_studio.core.train.presets import (
    ARCH_DEFAULTS,
    ARCH_KEYS,
    TINY,
    apply_defaults,
    defaults_for,
    get_value,
)


def test_every_architecture_has_defaults_at_its_native_resolution():
    assert set(ARCH_DEFAULTS) == set(ARCHITECTURES)
    resolution = {arch: defaults_for(arch)["dataset.resolution"] for arch in ARCHITECTURES}
    assert resolution == {"sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024}
    sdxl = defaults_for("sdxl")
    assert (sdxl["lora.rank"], sdxl["lora.alpha"], sdxl["train.mixed_precision"]) == (
        32, 16.0, "bf16")
    sd1 = defaults_for("sd1")
    assert (sd1["lora.rank"], sd1["train.learning_rate"], sd1["train.batch_size"],
            sd1["lora.text_encoder_lr"], sd1["train.optimizer"]) == (16, 1e-4, 1, 1e-5, "adamw")


@pytest.mark.parametrize("arch", [*ARCHITECTURES, TINY])
def test_the_defaults_name_real_keys_and_make_a_valid_config(arch, tmp_path):
    values = defaults_for(arch)
    assert set(values) == set(ARCH_KEYS)
    assert set(values) <= set(describe_keys())
    cfg = apply_defaults(TrainConfig(), arch)
    cfg.dataset.path = str(tmp_path)
    cfg.validate()
    assert all(get_value(cfg, key) == value for key, value in values.items())


def test_the_tiny_model_keeps_the_quickstart_recipe():
    quickstart = load_config(_quickstart_path())
    tiny = defaults_for(TINY)
    assert tiny == {key: get_value(quickstart, key) for key in ARCH_KEYS}
    assert (tiny["dataset.resolution"], tiny["train.learning_rate"], tiny["lora.rank"]) == (
        64, 1e-3, 8)


def test_kept_keys_are_not_replaced_and_the_defaults_are_copies():
    cfg = TrainConfig()
    cfg.dataset.resolution = 640
    out = apply_defaults(cfg, "sdxl", keep={"dataset.resolution"})
    assert out.dataset.resolution == 640 and out.lora.rank == 32
    assert cfg.lora.rank == 16  # the input is not changed
    defaults_for("sd1")["dataset.resolution"] = 1
    assert defaults_for("sd1")["dataset.resolution"] == 512


def test_an_unknown_architecture_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="sdxl"):
        defaults_for("flux")


def test_the_docstring_says_where_every_number_comes_from():
    doc = presets.__doc__
    for source in ("train_text_to_image_lora.py", "train_text_to_image_lora_sdxl.py",
                   "docs/train_network.md", "docs/sdxl_train_network.md",
                   "kohya_gui/class_basic_training.py", "examples/dreambooth/README.md"):
        assert source in doc, source


def _quickstart_path():
    from lora_studio.core.paths import resources_dir

    return resources_dir() / "presets" / "quickstart.toml"
