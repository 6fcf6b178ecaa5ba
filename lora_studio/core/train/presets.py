"""Training defaults that follow the base model's architecture, and presets read as settings.

`defaults_for(arch)` gives the settings a run on that family starts from, by dotted key
({"dataset.resolution": 512, ...}); the Train tab applies them to every setting the person has
not changed when the base model changes. "sd1", "sd2", "sd2-v" and "sdxl" are the architectures
of `core/models/architecture.py`; `TINY` is the built-in Tiny Shapes model: SD 1.x-shaped, but
trained with its own recipe, the shipped quickstart preset (resources/presets/quickstart.toml:
64 px, rank 8 LoCon, learning rate 1e-3, 1500 steps of batch 4, measured on the sample stars).
`read_preset(path)` reads a TOML preset as settings: unlike `load_config` it may name no dataset
(the Dataset tab provides it).

Where the numbers come from (files read at these commits: kohya-ss/sd-scripts 48d368fa,
bmaltais/kohya_ss 45088f04, huggingface/diffusers 58eb52c0):

* Resolution. sd1 / sd2 512: diffusers `examples/text_to_image/train_text_to_image_lora.py`
  (`--resolution` default 512) and kohya_ss `config example.toml` (`max_resolution = "512,512"`).
  sd2-v 768: diffusers `examples/dreambooth/README.md` ("Change the resolution to 768 if you are
  using the stable-diffusion-2 768x768 model"). sdxl 1024:
  `examples/text_to_image/train_text_to_image_lora_sdxl.py` (`--resolution` default 1024).
* Rank / alpha. SD 1.x / 2.x 16 / 8: sd-scripts `docs/train_network.md` (`--network_dim=16`;
  alpha "about half the value of network_dim"). SDXL 32 / 16: sd-scripts
  `docs/sdxl_train_network.md` (`--network_dim=32 --network_alpha=16`).
* Learning rate 1e-4 (all): sd-scripts `docs/train_network.md` and `docs/sdxl_train_network.md`
  (`--learning_rate=1e-4`), diffusers `train_text_to_image_lora(_sdxl).py` (default 1e-4),
  kohya_ss `kohya_gui/lora_gui.py` (`BasicTraining(learning_rate_value=0.0001)`).
* Text-encoder learning rate 1e-5 (all): sd-scripts `docs/train_network.md`
  (`--text_encoder_lr=1e-5`, "a smaller value than that for U-Net is recommended") and
  `docs/sdxl_train_network.md` (`--text_encoder_lr1=1e-5 --text_encoder_lr2=1e-5`).
* Text encoder trained: SD 1.x / 2.x yes, sd-scripts `train_network.py` trains it unless
  `--network_train_unet_only`; SDXL no, `docs/sdxl_train_network.md`'s example caches the text
  encoders' outputs, which needs `--network_train_unet_only`.
* Targets "attention+mlp" (all): sd-scripts `networks/lora.py` (`UNET_TARGET_REPLACE_MODULE =
  ["Transformer2DModel"]`, text encoder `CLIPAttention` + `CLIPMLP`).
* Steps 1600 (all): kohya_ss `kohya_gui/class_basic_training.py` (`max_train_steps` default
  1600). Batch size 1 (all): the same file (`train_batch_size` value 1) and the diffusers
  READMEs (`examples/text_to_image/README.md`, `README_sdxl.md`: `--train_batch_size=1`).
* Optimizer "adamw" (all): diffusers' scripts (AdamW unless `--use_8bit_adam`). kohya's
  AdamW8bit needs bitsandbytes and CUDA; it stays one click away.
* Mixed precision. SD 1.x / 2.x "fp16": sd-scripts `docs/train_network.md`
  (`--mixed_precision="fp16"`), diffusers `examples/text_to_image/README.md`. SDXL "bf16":
  sd-scripts `docs/sdxl_train_network.md` (`--mixed_precision="bf16"`). On a CPU the trainer
  refuses fp16 with a message saying to pick "no".
* Gradient checkpointing: SDXL on, `docs/sdxl_train_network.md` ("recommended to enable for
  SDXL due to its high memory consumption"); off for the others (the engine's default).
* LR schedule "constant" without warm-up (all): sd-scripts `docs/train_network.md`
  (`--lr_scheduler="constant"`), diffusers `examples/text_to_image/README.md`
  (`--lr_scheduler="constant" --lr_warmup_steps=0`).
* Mirror images off, preview steps 20 and guidance 7 (all): the engine's defaults in
  `core/train/config.py` (the quickstart's 12 steps at guidance 5 suit the tiny model only).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from lora_studio.core.errors import ConfigError
from lora_studio.core.train.config import TrainConfig, config_from_dict
from lora_studio.core.train.config_io import read_toml

TINY = "tiny"  # the built-in Tiny Shapes model (the quickstart recipe)
QUICKSTART = "quickstart.toml"
PLACEHOLDER_PATH = "<set when training starts>"

_SD = {
    "dataset.resolution": 512,
    "dataset.random_flip": False,
    "lora.rank": 16,
    "lora.alpha": 8.0,
    "lora.targets": "attention+mlp",
    "lora.train_text_encoder": True,
    "lora.text_encoder_lr": 1e-5,
    "train.steps": 1600,
    "train.batch_size": 1,
    "train.learning_rate": 1e-4,
    "train.lr_scheduler": "constant",
    "train.warmup_steps": 0,
    "train.optimizer": "adamw",
    "train.mixed_precision": "fp16",
    "train.gradient_checkpointing": False,
    "sample.steps": 20,
    "sample.cfg": 7.0,
}

ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd1": dict(_SD),
    "sd2": dict(_SD),
    "sd2-v": {**_SD, "dataset.resolution": 768},
    "sdxl": {**_SD, "dataset.resolution": 1024, "lora.rank": 32, "lora.alpha": 16.0,
             "lora.train_text_encoder": False, "train.mixed_precision": "bf16",
             "train.gradient_checkpointing": True},
}
# The keys an architecture decides (the same for every one, the tiny recipe included).
ARCH_KEYS: tuple[str, ...] = tuple(_SD)


def quickstart_config() -> TrainConfig:
    """The shipped quickstart preset, parsed (engine defaults for a broken install)."""
    from lora_studio.core.paths import resources_dir

    path = resources_dir() / "presets" / QUICKSTART
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return config_from_dict(data, base_dir=path.parent, validate=False)
    except (OSError, tomllib.TOMLDecodeError, ConfigError):
        return TrainConfig()


def get_value(cfg: TrainConfig, key: str) -> Any:
    """The value of a dotted key ("train.steps") of `cfg`."""
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


def set_value(cfg: TrainConfig, key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    setattr(getattr(cfg, section), name, copy.deepcopy(value))


def defaults_for(arch: str, cuda: bool = True) -> dict[str, Any]:
    """The starting settings of a run on `arch` ("sd1", "sd2", "sd2-v", "sdxl" or `TINY`), by
    dotted key; without a CUDA GPU, mixed precision is "no" (the trainer refuses fp16 on a CPU,
    and bf16 there is slower than fp32). Raises ValueError for another architecture."""
    if arch == TINY:
        recipe = quickstart_config()
        return {key: get_value(recipe, key) for key in ARCH_KEYS}
    if arch not in ARCH_DEFAULTS:
        raise ValueError(f"no defaults for the architecture {arch!r}; known: "
                         f"{', '.join([*ARCH_DEFAULTS, TINY])}")
    values = copy.deepcopy(ARCH_DEFAULTS[arch])
    if not cuda:
        values["train.mixed_precision"] = "no"
    return values


def read_preset(path: str | Path) -> TrainConfig:
    """A preset / saved config from TOML, like `load_config`, except that it may name no dataset
    (the Dataset tab provides it). Raises ConfigError naming a bad key."""
    path = Path(path)
    cfg = config_from_dict(read_toml(path, "preset"), base_dir=path.resolve().parent,
                           validate=False)
    validate_settings(cfg)
    return cfg


def validate_settings(cfg: TrainConfig) -> None:
    """`cfg.validate()`, accepting an empty dataset path (a preset holds settings, not data) and
    an empty output folder (the form's automatic one)."""
    probe = copy.deepcopy(cfg)
    if not probe.dataset.subsets:
        probe.dataset.path = probe.dataset.path or PLACEHOLDER_PATH
    probe.output.path = probe.output.path or PLACEHOLDER_PATH
    probe.validate()


def apply_defaults(cfg: TrainConfig, arch: str, keep: set[str] | frozenset[str] = frozenset()
                   ) -> TrainConfig:
    """A copy of `cfg` with `arch`'s defaults, except for the keys in `keep`."""
    out = copy.deepcopy(cfg)
    for key, value in defaults_for(arch).items():
        if key not in keep:
            set_value(out, key, value)
    return out


__all__ = ["ARCH_DEFAULTS", "ARCH_KEYS", "TINY", "apply_defaults", "defaults_for", "get_value",
           "quickstart_config", "read_preset", "set_value", "validate_settings"]
