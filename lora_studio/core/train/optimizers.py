"""The optimizers a run can use, each with a clear error where it cannot run."""

from __future__ import annotations

from typing import Any

import torch

from lora_studio.core.errors import ConfigError


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float, weight_decay: float,
                   device_kind: str):
    """`train.optimizer` over parameter groups (each keeps its own "lr")."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    # adamw8bit: bitsandbytes' 8-bit AdamW, CUDA only.
    if device_kind != "cuda":
        raise ConfigError("train.optimizer", "\"adamw8bit\" needs a CUDA GPU (bitsandbytes).",
                          "Use optimizer = \"adamw\" on this machine.")
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ConfigError("train.optimizer", "\"adamw8bit\" needs the bitsandbytes package, "
                          "which is not installed.",
                          "Install it (pip install \"lora-studio[cuda8bit]\" or pip install "
                          "bitsandbytes), or use optimizer = \"adamw\".") from exc
    return bnb.optim.AdamW8bit(groups, lr=lr, weight_decay=weight_decay)
