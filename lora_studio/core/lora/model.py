"""The in-memory, layout-neutral form of a LoRA file.

Module names are canonical: `<component>.<module path>`, where component is `unet`,
`text_encoder` or `text_encoder_2` and the path is the module's name in the diffusers UNet or in
the transformers 5 CLIP text model *without* its `text_model.` prefix
(`text_encoder.encoder.layers.0.self_attn.q_proj`). Each module holds the factors of
`delta_W = (alpha / rank) * up @ down` (REFERENCE §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lora_studio.core.models.architecture import LORA_FAMILIES, architecture

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
LAYOUTS = ("kohya", "diffusers", "peft")
# what a LoRA file can be made for (its LoraFile.arch): the registry's LoRA families
ARCHS = LORA_FAMILIES
ARCH_LABELS = {arch: architecture(arch).label for arch in ARCHS}


@dataclass
class LoraModule:
    """One low-rank update: `down` [r, in(, k, k)], `up` [out, r(, 1, 1)], the real `alpha`."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """The factor the product `up @ down` is multiplied by at strength 1."""
        return self.alpha / self.rank

    @property
    def is_conv(self) -> bool:
        return self.down.dim() == 4

    def delta_weight(self) -> torch.Tensor:
        """The dense update this module adds to its base weight (float32), shaped like it."""
        down = self.down.float().flatten(1)
        up = self.up.float().flatten(1)
        delta = (up @ down) * self.scale
        if self.down.dim() == 4:
            return delta.reshape(self.up.shape[0], *self.down.shape[1:])
        return delta


@dataclass
class LoraFile:
    """A whole LoRA: canonical module name -> LoraModule, plus the file's string metadata."""

    modules: dict[str, LoraModule] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    layout: str = "kohya"  # the layout it was read from: "kohya" | "diffusers" | "peft"
    arch: str | None = None  # "sd1" | "sd2" | "sdxl" | None (unknown)

    def component_modules(self, component: str) -> dict[str, LoraModule]:
        prefix = component + "."
        return {k: v for k, v in self.modules.items() if k.startswith(prefix)}

    @property
    def ranks(self) -> set[int]:
        return {m.rank for m in self.modules.values()}

    @property
    def alphas(self) -> set[float]:
        return {m.alpha for m in self.modules.values()}


def split_canonical(name: str) -> tuple[str, str]:
    """`unet.down_blocks.0...` -> ("unet", "down_blocks.0...")."""
    component, _, path = name.partition(".")
    return component, path
