"""The training engine: `TrainConfig`, the training loop, previews, checkpoints, export.

    from lora_studio.core.train import load_config, run_training_job
    cfg = load_config("train.toml", ["train.steps=200"])
    run_training_job(cfg, emit=print, control=JobControl())

Submodules import torch / diffusers lazily, so importing this package stays cheap.
"""

from __future__ import annotations

from lora_studio.core.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    describe_keys,
    load_config,
    save_config,
)

__all__ = ["TrainConfig", "apply_overrides", "config_from_dict", "describe_keys", "load_config",
           "save_config", "run_training_job", "train"]


def __getattr__(name: str):
    if name in ("run_training_job", "train", "TrainResult"):
        from lora_studio.core.train import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
