"""TrainConfig: validation names the key, --set overrides are typed, TOML round trip, paths."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lora_studio.core.errors import ConfigError
from lora_studio.core.paths import resources_dir, sample_dataset_dir
from lora_studio.core.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_toml,
    describe_keys,
    load_config,
    save_config,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BASIC = """
schema_version = 1
[dataset]
path = "images"
resolution = 64
[output]
path = "out"
name = "mylora"
"""


@pytest.mark.parametrize("section,key,value,message", [
    ("train", "learning_rate", -1, "train.learning_rate: must be > 0, got -1"),
    ("train", "learning_rate", 1e38, "train.learning_rate: must be at most 10, got 1e+38"),
    ("lora", "text_encoder_lr", 50.0, "lora.text_encoder_lr: must be at most 10, got 50"),
    ("train", "steps", 0, "train.steps: must be >= 1, got 0"),
    ("train", "lr_scheduler", "exponential", "train.lr_scheduler: must be one of"),
    ("train", "mixed_precision", "fp8", "train.mixed_precision: must be one of"),
    ("lora", "rank", 0, "lora.rank: must be >= 1"),
    ("lora", "dropout", 1.5, "lora.dropout: must be in [0, 1)"),
    ("lora", "targets", "everything", "lora.targets: must be one of"),
    ("dataset", "resolution", 65, "dataset.resolution: must be a multiple of 8"),
    ("output", "format", "ckpt", "output.format: must be one of"),
    ("output", "save_precision", "fp64", "output.save_precision: must be one of"),
    ("train", "steps", "many", "train.steps: must be int, got 'many'"),
    ("train", "cache_latents", "yes", "train.cache_latents: must be bool"),
    ("sample", "sampler", "Warp Drive", "sample.sampler: unknown sampler"),
    ("train", "max_timestep", 1001, "train.max_timestep: must be in 1..1000, got 1001"),
    ("train", "min_timestep", -1, "train.min_timestep: must be below train.max_timestep"),
    ("train", "min_timestep", 1000, "train.min_timestep: must be below train.max_timestep "
                                    "(1000)"),
])
def test_invalid_values_are_errors_naming_the_key(tmp_path, section, key, value, message):
    data = tomllib.loads(BASIC)
    data.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, base_dir=tmp_path)
    assert info.value.key == f"{section}.{key}"
    assert message in str(info.value)


def test_unknown_keys_and_sections_are_errors_naming_them(tmp_path):
    with pytest.raises(ConfigError, match="train.learning_rat: unknown key") as info:
        config_from_dict({**tomllib.loads(BASIC), "train": {"learning_rat": 1e-4}}, tmp_path)
    assert "learning_rate" in info.value.fix  # the known keys are listed
    with pytest.raises(ConfigError, match="trian: unknown section"):
        config_from_dict({**tomllib.loads(BASIC), "trian": {}}, tmp_path)


def test_previews_need_prompts_and_dataset_needs_a_path(tmp_path):
    with pytest.raises(ConfigError, match="sample.prompts"):
        config_from_dict({**tomllib.loads(BASIC), "sample": {"every": 10}}, tmp_path)
    with pytest.raises(ConfigError, match="dataset.path: is empty"):
        config_from_dict({"output": {"path": "o"}}, tmp_path)


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_write(folder / "train.toml", BASIC))
    assert Path(cfg.dataset.path) == folder / "images"
    assert cfg.lora_path == folder / "out" / "mylora.safetensors"
    # ${cwd} is the working directory; --set paths are relative to it too
    cfg = load_config(folder / "train.toml", ["output.path=${cwd}/runs", "dataset.path=imgs"])
    assert Path(cfg.output.path) == tmp_path / "runs"
    assert Path(cfg.dataset.path) == tmp_path / "imgs"


def test_set_overrides_are_parsed_by_the_field_type(tmp_path):
    cfg = load_config(_write(tmp_path / "c.toml", BASIC), [
        "train.learning_rate=3e-4", "train.steps=50", "train.cache_latents=false",
        "lora.alpha=8", "lora.targets=attention+mlp", "sample.prompts=[\"a star\", \"a cat\"]",
        "sample.every=5", "dataset.default_caption=zqstar, 1girl", "model.base=tiny",
    ])
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert cfg.train.steps == 50 and cfg.train.cache_latents is False
    assert cfg.lora.alpha == 8.0 and isinstance(cfg.lora.alpha, float)
    assert cfg.unet_targets()[-1] == "ff.net.2"
    assert cfg.sample.prompts == ["a star", "a cat"]
    assert cfg.dataset.default_caption == "zqstar, 1girl"
    assert apply_overrides(cfg, ["lora.targets=to_q,to_v"]).unet_targets() == ["to_q", "to_v"]
    with pytest.raises(ConfigError, match="train.learning_rate: must be > 0"):
        apply_overrides(cfg, ["train.learning_rate=-1"])
    with pytest.raises(ConfigError, match="train.steps: must be a number"):
        apply_overrides(cfg, ["train.steps=lots"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides(cfg, ["steps"])


def test_toml_round_trip_keeps_every_value(tmp_path):
    cfg = load_config(_write(tmp_path / "c.toml", BASIC), [
        "train.learning_rate=2e-4", "lora.targets=[\"to_q\", \"to_k\"]", "train.seed=7",
        "sample.prompts=[\"x\"]", "sample.every=3", "lora.train_text_encoder=true"])
    saved = save_config(cfg, tmp_path / "elsewhere" / "copy.toml")
    again = load_config(saved)
    assert again == cfg
    assert again.to_dict() == tomllib.loads(config_to_toml(cfg))
    assert tomllib.loads(saved.read_text())["schema_version"] == 1


def test_every_key_has_help_text():
    keys = describe_keys()
    assert {"model.base", "dataset.path", "lora.targets", "train.min_snr_gamma",
            "sample.every", "checkpoint.every", "output.save_precision"} <= set(keys)
    assert all(text for text in keys.values())
    assert TrainConfig().schema_version == 1


def test_every_key_has_what_the_train_form_is_generated_from():
    """Label, group and (for numbers and choices) a range that holds the default: the Train
    form, its tooltips and its error messages come from these (config._f)."""
    import dataclasses

    from lora_studio.core.train.config import GROUPS, SECTIONS

    labels = set()
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            key, meta = f"{section}.{f.name}", f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert meta.get("label") and meta.get("group") in GROUPS, key
            assert meta["label"] not in labels, f"{key}: two settings called {meta['label']}"
            labels.add(meta["label"])
            if "minimum" in meta:
                assert meta["minimum"] <= default <= meta.get("maximum", default), key
            if "choices" in meta:
                choices = meta["choices"]
                assert default in (choices() if callable(choices) else choices), key
            assert isinstance(meta.get("advanced", False), bool), key


def test_quickstart_preset_loads_trains_on_the_sample_data_and_writes_under_cwd(tmp_path,
                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(resources_dir() / "presets" / "quickstart.toml")
    assert Path(cfg.dataset.path) == (sample_dataset_dir()).resolve()
    assert Path(cfg.output.path) == tmp_path / "output" / "quickstart"
    assert cfg.model.base in ("", "tiny") and cfg.sample.every > 0 and cfg.sample.prompts
    assert "zqstar" in cfg.trigger_phrase()
