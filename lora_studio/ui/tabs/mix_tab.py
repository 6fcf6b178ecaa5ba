"""Mix tab: stack LoRAs on strength sliders (placeholder until the generate session lands)."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

from lora_studio.ui.widgets.coming_soon import ComingSoonPanel


class MixTab(ComingSoonPanel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(
            "Mix LoRAs",
            "List the LoRAs you trained or downloaded, stack them on a base model with one "
            "strength slider each, and export the mix as a merged .safetensors file.",
            "Meanwhile, inspect a LoRA from the command line:  lora-studio --help",
            parent)
        self.setObjectName("MixTab")
