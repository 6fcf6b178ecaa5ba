"""Which LoRAs act in a render, at which weights, step by step (A1111's prompt-tag rules).

- `<lora:name:w>` tags in the prompt are taken out before text encoding. When a LoRA loaded in the
  session answers to that name (its adapter name, its file stem, or its `ss_output_name`
  alias, case-insensitive), the tag's weight is used for this generation and the LoRA is active
  for it even when switched off on its slider; the session's own weights are restored afterwards.
  A tag naming no loaded LoRA is reported with a `Log` warning and otherwise ignored. A tag's
  separate text-encoder weight (`<lora:name:te:unet>`, `te=` / `unet=`) goes to the LoRA's
  text-encoder layers and the UNet weight to its UNet layers. A weight written as
  sd-webui-loractl keyframes (`<lora:name:0@0,1@0.5>`, `generate.strength_schedule`) changes
  the UNet strength between denoising steps (the text encoder counts with its first step's
  value: the prompt is encoded once); such a tag replaces the LoRA's "Starts at", which is the
  step-wise case of it. A tag is the whole setting of its LoRA, as in A1111:
  `<lora:name:0.8:lbw=OUTALL>` (or `lbw=` 17 numbers) sets block weights for the render, and a
  tag without `lbw=` renders all blocks at its weight (a note says when that drops the LoRA's
  own block weights). An `lbw=` that cannot be read is a StudioError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lora_studio.core import events
from lora_studio.core.errors import StudioError
from lora_studio.core.generate.adapters import ActiveAdapter
from lora_studio.core.generate.strength_schedule import StrengthSchedule
from lora_studio.core.lora.block_weights import BlockWeights, normalized


@dataclass
class ActiveLora:
    """A LoRA acting in one render: at its slider's values, or as a prompt tag set it."""

    lora: Any  # session.SessionLora
    weight: float  # the UNet weight (a schedule's first weight)
    tag_name: str  # the name written to PNG info
    block_weights: BlockWeights | None = None
    te_weight: float | None = None  # the text encoders' weight; None: `weight`
    schedule: StrengthSchedule | None = None  # the UNet weight per step (loractl keyframes)
    te_schedule: StrengthSchedule | None = None

    @property
    def scheduled(self) -> bool:
        """A tag gave keyframes: they replace the LoRA's "Starts at"."""
        return self.schedule is not None or self.te_schedule is not None

    def adapter_at(self, step: int, steps: int) -> ActiveAdapter | None:
        """(name, UNet weight, block weights, text-encoder weight) during denoising step
        `step` (0-based) of `steps`; None while a LoRA that starts late is not on yet."""
        if not self.scheduled:
            if step < round(self.lora.start * steps):
                return None
            return self.lora.name, self.weight, self.block_weights, self.te_weight
        unet = self.schedule.at_step(step, steps) if self.schedule else self.weight
        te = self.te_schedule.at_step(0, steps) if self.te_schedule else self.te_weight
        if te is None:  # the text encoder follows the UNet's schedule: read at the first step
            te = self.schedule.at_step(0, steps)
        return self.lora.name, unet, self.block_weights, te


def adapters_at(active: list[ActiveLora], step: int, steps: int) -> list[ActiveAdapter]:
    """The adapters on during denoising step `step` (0-based) of `steps`, at its weights."""
    return [a for a in (lo.adapter_at(step, steps) for lo in active) if a is not None]


def active_loras(loras: Sequence[Any], tags: list, note: events.Emit) -> list[ActiveLora]:
    """The session's enabled LoRAs, with prompt tags overriding weight (and enabling)."""
    chosen = {lo.name: ActiveLora(lo, lo.weight, lo.prompt_name, lo.block_weights)
              for lo in loras if lo.enabled}
    for tag in tags:
        lora = find_by_prompt_name(loras, tag.name)
        if lora is None:
            note(events.Log(f"<lora:{tag.name}> in the prompt: no LoRA of that name is "
                            "loaded; ignored.", "warning"))
            continue
        block_weights = tag_block_weights(tag)
        if block_weights is None and lora.block_weights is not None:
            note(events.Log(f"<lora:{tag.name}> has no lbw=, so all its blocks use "
                            f"{tag.weight:g}; add :lbw={lora.block_weights.notation()} to "
                            "keep its block weights.", "info"))
        chosen[lora.name] = ActiveLora(lora, float(tag.weight), tag.name, block_weights,
                                        tag.te_weight, tag.schedule, tag.te_schedule)
        if chosen[lora.name].scheduled and lora.start:
            note(events.Log(f"<lora:{tag.name}> gives per-step weights, so its \"Starts at "
                            f"{lora.start:g}\" is not used for this render.", "info"))
    order = [lo.name for lo in loras]
    return sorted(chosen.values(), key=lambda a: order.index(a.lora.name))


def find_by_prompt_name(loras: Sequence[Any], name: str) -> Any:
    """The loaded LoRA a tag's `name` means (adapter name, file stem or alias), or None."""
    key = name.lower()
    for lora in loras:
        if key in {lora.name.lower(), lora.prompt_name.lower(), (lora.alias or "").lower()}:
            return lora
    return None


def tag_block_weights(tag) -> BlockWeights | None:
    """A prompt tag's `lbw=`, read (a StudioError naming the tag when it cannot be)."""
    if not getattr(tag, "lbw", None):
        return None
    try:
        return normalized(BlockWeights.parse(tag.lbw))
    except StudioError as exc:
        raise StudioError(f"<lora:{tag.name}:...:lbw={tag.lbw}>: {exc.what}", exc.fix) from None
