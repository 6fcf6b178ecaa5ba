"""One line above Start: the estimated peak GPU memory of the run the form describes.

"Estimated GPU memory: 9.8 GiB (weights 5.1, LoRA+optimizer 0.4, activations 3.6, overhead
0.7)", with a tooltip listing every part, the estimate's notes and the settings that would
lower it most (`core.train.memory.lower_memory_advice`). With `set_vram_gb(8)` a total above
the GPU's memory turns red and says so, within 10% of it amber. The view computes nothing:
whoever owns the form calls `show_estimate(estimate, advice)` (an estimate builds meta-device
networks, so off the GUI thread the first time) and `clear()`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

if TYPE_CHECKING:
    from lora_studio.core.train.memory import MemoryEstimate

NORMAL_STYLE = ""  # the studio style sheet's label colour
NEAR_STYLE = "color: #e8b14a; font-weight: 600;"  # within 10% of the GPU's memory
OVER_STYLE = "color: #f28b82; font-weight: 600;"  # above it
NEAR_SHARE = 0.9


class MemoryEstimateView(QLabel):
    """The estimate's one-line summary; its parts and the advice in the tooltip."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MemoryEstimate")
        self.setTextFormat(Qt.PlainText)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.estimate: MemoryEstimate | None = None
        self.advice: list[str] = []
        self.vram_gb: float | None = None
        self.level = "none"  # "none" | "ok" | "near" | "over": against the GPU's memory
        self.clear()

    def show_estimate(self, estimate: MemoryEstimate, advice: Sequence[str] = ()) -> None:
        self.estimate, self.advice = estimate, list(advice)
        self._render()
        self.show()

    def clear(self) -> None:
        self.estimate, self.advice = None, []
        super().clear()
        self.setToolTip("")
        self.level = "none"
        self.setStyleSheet(NORMAL_STYLE)
        self.hide()

    def set_vram_gb(self, gb: float | None) -> None:
        """The GPU's memory in GiB (None: unknown, no warning)."""
        self.vram_gb = gb
        if self.estimate is not None:
            self._render()

    def _render(self) -> None:
        from lora_studio.core.train.memory import GIB

        estimate = self.estimate
        text = estimate.summary()
        self.level, style = "none", NORMAL_STYLE
        if self.vram_gb:
            share = estimate.total / (self.vram_gb * GIB)
            if share > 1:
                self.level, style = "over", OVER_STYLE
                text += f": more than this GPU's {self.vram_gb:g} GiB"
            elif share > NEAR_SHARE:
                self.level, style = "near", NEAR_STYLE
                text += f": close to this GPU's {self.vram_gb:g} GiB"
            else:
                self.level = "ok"
        self.setText(text)
        self.setStyleSheet(style)
        self.setToolTip(tooltip_html(estimate, self.advice))


def tooltip_html(estimate: MemoryEstimate, advice: Sequence[str]) -> str:
    """Every part, the notes and the advice, as the tooltip's rich text."""
    from lora_studio.core.train.memory import format_bytes

    w, h = estimate.bucket
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td align='right'>"
                   f"{format_bytes(value)}</td></tr>" for name, value in estimate.parts().items())
    parts = [f"<b>Peak GPU memory, estimated</b> (largest bucket {w}x{h}, batch "
             f"{estimate.batch_size}, {estimate.weight_dtype} weights)",
             f"<table>{rows}<tr><td><b>total</b></td><td align='right'><b>"
             f"{format_bytes(estimate.total)}</b></td></tr></table>"]
    parts.append("<p><small>total = weights + LoRA + optimizer state + the larger of "
                 "(gradients + activations + recompute) and encoding, + overhead</small></p>")
    parts += [f"<p>{html.escape(note)}</p>" for note in estimate.notes]
    if advice:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in advice)
        parts.append(f"<p><b>To lower it:</b></p><ul>{items}</ul>")
    parts.append("<p><i>An estimate from the settings, not a measurement.</i></p>")
    return "".join(parts)
