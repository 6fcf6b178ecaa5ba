"""Generate tab: prompt → images with the mixed LoRAs (placeholder until the session lands)."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

from lora_studio.ui.widgets.coming_soon import ComingSoonPanel


class GenerateTab(ComingSoonPanel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(
            "Generate",
            "Write a prompt, pick a sampler, steps and seed, and watch each image appear step "
            "by step. Images are saved as PNG with A1111-compatible parameters.",
            "The LoRAs you train here already load in AUTOMATIC1111, ComfyUI, Forge and "
            "diffusers.",
            parent)
        self.setObjectName("GenerateTab")
