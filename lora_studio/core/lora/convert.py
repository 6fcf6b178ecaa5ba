"""Re-save a LoRA file in another key layout (kohya <-> diffusers/PEFT), strength preserved.

Every module's update `(alpha / rank) * up @ down` is the same in the output: the kohya layout
keeps each module's alpha; the diffusers layout folds `alpha / rank` into lora_B (see
`formats.write_lora`). The file's metadata (trigger words, `ss_*`, `modelspec.*`) is carried
over; the hashes are recomputed for the new bytes, and the architecture keys the file lacks
(`ss_base_model_version`, `modelspec.architecture`, ...) are added from the architecture read
off its weights, so other tools file it under the right model. The source's A1111 card
(`<stem>.json`) comes along to the new file's card (`card.save_lora_with_card`).
"""

from __future__ import annotations

import os
from pathlib import Path

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.formats import read_lora

EXPORT_LAYOUTS = ("kohya", "diffusers")


def convert_lora(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                 layout: str = "kohya") -> Path:
    """Read `source` (any supported layout) and write it to `target` in `layout`, atomically
    (when `target` is `source`, the old file stays intact until the new one is complete)."""
    if layout not in EXPORT_LAYOUTS:
        raise LoraFormatError(f"Unknown LoRA layout {layout!r}.",
                              f"Choose one of: {', '.join(EXPORT_LAYOUTS)}.")
    target = Path(target)
    if target.suffix.lower() != ".safetensors":
        raise LoraFormatError(f"{target.name}: LoRA files are saved as .safetensors.",
                              "Give the output a .safetensors name.")
    from lora_studio.core.lora.card import save_lora_with_card

    lora = read_lora(source)
    return save_lora_with_card(lora, target, layout=layout, sources=[source])[0]
