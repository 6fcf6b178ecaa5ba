"""The optimizers a run can use (`train.optimizer`), each with a clear error where it cannot run.

Every optimizer gets the trainer's parameter groups as they are, so each group keeps its own
"lr" (the UNet LoRA at train.learning_rate, the text-encoder LoRA at lora.text_encoder_lr), and
diffusers' LR schedules (a LambdaLR that scales every group's "lr") work with all of them.
`train.weight_decay` is the same decoupled (AdamW-style) decay in each.

* adamw: torch.optim.AdamW.
* adamw8bit: bitsandbytes' 8-bit AdamW, CUDA only (a quarter of AdamW's optimizer memory).
* adafactor: transformers' Adafactor with fixed learning rates, as kohya recommends for LoRA
  (optimizer_args "scale_parameter=False relative_step=False warmup_init=False"): the step is
  train.learning_rate, scheduled like AdamW's, over factored second moments (less memory).
  transformers is a dependency anyway; torch.optim.Adafactor (torch >= 2.5) cannot do this: it
  always scales the step by each tensor's RMS and by min(lr, 1/sqrt(step)), so an lr of 1e-4
  would mean something else there.
* prodigy: Prodigy (`pip install prodigyopt`) estimates the step size itself, and the learning
  rate multiplies that estimate: use train.learning_rate = 1.0. It takes one learning rate for
  every group, so lora.text_encoder_lr must be 0 (the same).
"""

from __future__ import annotations

from typing import Any

import torch

from lora_studio.core.errors import ConfigError

# Below this, a Prodigy run's learning rate is almost certainly an AdamW value left in place.
PRODIGY_LOW_LR = 0.1


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float, weight_decay: float,
                   device_kind: str):
    """`train.optimizer` over parameter groups (each keeps its own "lr"; `lr` is the default of
    a group without one). ConfigError where the optimizer cannot run here."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw8bit":
        return _adamw8bit(groups, lr, weight_decay, device_kind)
    if name == "adafactor":
        return _adafactor(groups, lr, weight_decay)
    if name == "prodigy":
        return _prodigy(groups, lr, weight_decay)
    from lora_studio.core.train.config import OPTIMIZERS

    raise ConfigError("train.optimizer", f"unknown optimizer {name!r}",
                      "Use one of " + ", ".join(f'"{o}"' for o in OPTIMIZERS) + ".")


def learning_rate_warning(name: str, lr: float) -> str | None:
    """A warning worth showing before a run starts, when the learning rate does not fit the
    optimizer (None when it does). Not an error: a deliberate choice stays possible."""
    if name == "prodigy" and lr < PRODIGY_LOW_LR:
        return (f"Prodigy sets the step size itself and train.learning_rate ({lr:g}) multiplies "
                f"it, so this run will barely learn. Use train.learning_rate = 1.0 with "
                f"Prodigy (lower it only to damp Prodigy's estimate, e.g. 0.5).")
    return None


def _adamw8bit(groups: list[dict[str, Any]], lr: float, weight_decay: float,
               device_kind: str):
    """bitsandbytes' 8-bit AdamW: CUDA only."""
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


def _adafactor(groups: list[dict[str, Any]], lr: float, weight_decay: float):
    """transformers' Adafactor with kohya's LoRA settings: a fixed step of each group's "lr"
    (relative_step=False, so the schedule drives it), no scaling by the parameter's RMS
    (scale_parameter=False) and no built-in warm-up (warmup_init=False: train.warmup_steps)."""
    from transformers.optimization import Adafactor

    return Adafactor(groups, lr=lr, weight_decay=weight_decay, relative_step=False,
                     scale_parameter=False, warmup_init=False)


def _prodigy(groups: list[dict[str, Any]], lr: float, weight_decay: float):
    """prodigyopt's Prodigy with the settings its README recommends for diffusion models
    (use_bias_correction=True, safeguard_warmup=True; weight decay as configured)."""
    first, *rest = [group.get("lr", lr) for group in groups]
    other = next((rate for rate in rest if rate != first), None)
    if other is not None:
        # Prodigy's step raises a RuntimeError for groups with different (non-zero) rates.
        raise ConfigError("lora.text_encoder_lr", f"is {other:g} but train.learning_rate is "
                          f"{first:g}, and Prodigy takes one learning rate for every group "
                          f"(it sets the step size itself)",
                          "Set lora.text_encoder_lr = 0 (the same as train.learning_rate) "
                          "with optimizer = \"prodigy\", or use optimizer = \"adamw\".")
    try:
        from prodigyopt import Prodigy
    except ImportError as exc:
        raise ConfigError("train.optimizer", "\"prodigy\" needs the prodigyopt package, which "
                          "is not installed.",
                          "pip install prodigyopt, or use optimizer = \"adamw\".") from exc
    return Prodigy(groups, lr=lr, weight_decay=weight_decay, use_bias_correction=True,
                   safeguard_warmup=True)
