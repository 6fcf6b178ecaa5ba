"""The preview images of a training run: a horizontal, scrollable strip, newest first.

Every preview is kept (a run with previews every 25 steps for 2,000 steps has 80 per prompt;
they are small). Each tile shows the image and "step N" (and the prompt's number when there are
several prompts); the tooltip holds the whole prompt. Images arrive as PIL images owned by the
event and become QPixmap here, in the GUI thread.

A preview flagged as broken (`problem`: "all black", "all white", "flat (one colour)", found by
`core.train.preview_check` in the Train view-model) gets a red frame, a "⚠ all black" badge over
the picture and a tooltip that says what it usually means and what to try.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from lora_studio.core.train.preview_check import PROBLEM_HINTS
from lora_studio.ui.qimages import to_pixmap  # noqa: F401 (also imported from here)

TILE = 128
FLAGGED_FRAME = "QLabel#PreviewLabel { border: 2px solid #e5533d; }"
BADGE_STYLE = ("background: rgba(190, 45, 30, 230); color: white; font-weight: 600; "
               "border-radius: 3px; padding: 2px 4px;")
EMPTY_TEXT = "Preview images appear here while training runs (set “Preview every”)."


@dataclass
class PreviewEntry:
    step: int
    prompt: str
    index: int
    pixmap: QPixmap  # full size
    problem: str | None = None  # why the preview looks broken (None: it looks like a picture)


class PreviewTile(QFrame):
    """One preview: the picture scaled to the tile and its "step N" caption."""

    def __init__(self, entry: PreviewEntry, many_prompts: bool, tile: int = TILE,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PreviewTile")
        self.entry = entry
        self.image_label = QLabel()
        self.image_label.setObjectName("PreviewLabel")
        self.image_label.setAlignment(Qt.AlignCenter)
        self.image_label.setFixedSize(tile, tile)
        pixmap = entry.pixmap
        # Tiny-model previews (32-64 px) are enlarged without blurring; big ones shrink smoothly.
        mode = Qt.FastTransformation if max(pixmap.width(), pixmap.height()) < tile \
            else Qt.SmoothTransformation
        self.image_label.setPixmap(pixmap.scaled(tile - 4, tile - 4, Qt.KeepAspectRatio, mode))
        self.caption_label = QLabel()
        self.caption_label.setObjectName("HintLabel")
        self.caption_label.setAlignment(Qt.AlignCenter)
        self.set_numbered(many_prompts)
        tip = f"step {entry.step} · {entry.pixmap.width()}×{entry.pixmap.height()}\n{entry.prompt}"
        self.problem_label = QLabel(f"⚠ {entry.problem}", self.image_label)
        self.problem_label.setObjectName("PreviewProblem")
        self.problem_label.setStyleSheet(BADGE_STYLE)
        self.problem_label.setAlignment(Qt.AlignCenter)
        self.problem_label.setWordWrap(True)
        self.problem_label.setFixedWidth(tile - 8)  # a banner across the top of the picture
        self.problem_label.ensurePolished()  # the stylesheet's padding counts in the height
        self.problem_label.setFixedHeight(self.problem_label.heightForWidth(tile - 8))
        self.problem_label.move(4, 4)
        self.problem_label.setVisible(entry.problem is not None)
        if entry.problem:
            self.image_label.setStyleSheet(FLAGGED_FRAME)
            hint = PROBLEM_HINTS.get(entry.problem, "")
            tip = f"⚠ This preview is {entry.problem}. {hint}\n\n{tip}"
        self.setToolTip(tip)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.image_label)
        layout.addWidget(self.caption_label)

    def set_numbered(self, many_prompts: bool) -> None:
        """"step N", or "step N · #k" (the k-th prompt) when the run has several prompts."""
        numbered = f" · #{self.entry.index + 1}" if many_prompts else ""
        self.caption_label.setText(f"step {self.entry.step}{numbered}")


class PreviewStrip(QScrollArea):
    """`add_preview(step, prompt, image, index)` puts a tile first; `clear()` starts a new run.

    `entries` lists every preview in arrival order; `tiles()` the tiles as shown (newest first).
    """

    def __init__(self, parent: QWidget | None = None, tile: int = TILE) -> None:
        super().__init__(parent)
        self.setObjectName("PreviewStrip")
        self._tile = tile
        self.entries: list[PreviewEntry] = []
        self._prompts: set[str] = set()
        self._numbered = False
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.NoFrame)
        self._inner = QWidget()
        self._row = QHBoxLayout(self._inner)
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.setSpacing(8)
        self.empty_label = QLabel(EMPTY_TEXT)
        self.empty_label.setObjectName("PreviewLabel")
        self.empty_label.setAlignment(Qt.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setMinimumHeight(tile)
        self._row.addWidget(self.empty_label, 1)
        self._row.addStretch(0)
        self.setWidget(self._inner)
        scrollbar = self.horizontalScrollBar().sizeHint().height()
        self.setMinimumHeight(tile + 26 + scrollbar)

    def add_preview(self, step: int, prompt: str, image: Any, index: int = 0,
                    problem: str | None = None) -> PreviewTile:
        """Show a preview first; `problem` flags it as broken (a badge and a red frame)."""
        entry = PreviewEntry(step, prompt, index, to_pixmap(image), problem)
        self.entries.append(entry)
        was_numbered = self._numbered
        self._prompts.add(prompt)
        self._numbered = len(self._prompts) > 1 or index > 0
        if self._numbered and not was_numbered:
            for earlier in self.tiles():
                earlier.set_numbered(True)
        self.empty_label.hide()
        tile = PreviewTile(entry, many_prompts=self._numbered, tile=self._tile)
        # Newest first; previews of one step keep their prompt order.
        position = sum(1 for t in self.tiles() if t.entry.step == step and t.entry.index < index)
        self._row.insertWidget(position, tile)
        self.horizontalScrollBar().setValue(0)
        return tile

    def tiles(self) -> list[PreviewTile]:
        """The tiles in the order shown (newest step first)."""
        found = []
        for i in range(self._row.count()):
            widget = self._row.itemAt(i).widget()
            if isinstance(widget, PreviewTile):
                found.append(widget)
        return found

    def count(self) -> int:
        return len(self.entries)

    def flagged(self) -> list[PreviewTile]:
        """The tiles of previews flagged as broken, as shown (newest first)."""
        return [t for t in self.tiles() if t.entry.problem]

    def set_empty_text(self, text: str) -> None:
        self.empty_label.setText(text)

    def clear(self) -> None:
        for tile in self.tiles():
            self._row.removeWidget(tile)
            tile.deleteLater()
        self.entries.clear()
        self._prompts.clear()
        self._numbered = False
        self.empty_label.show()
