"""The caption editor of the Dataset tab: which image, where its caption comes from, the text,
how many of its tokens the text encoder reads, Save and Revert.

A thin widget: the tab decides what to show and writes the file; `caption_note` and
`token_note` say in words what a caption is and how much of it is read.
"""

from __future__ import annotations

from html import escape

from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.dataset.scan import DatasetItem

NOTHING_SELECTED = "Select an image to edit its caption."


def caption_note(item: DatasetItem, extension: str) -> str:
    """Where `item`'s caption comes from, e.g. "no .txt: trains as “chelsea cat” (kohya folder
    class)" or "hubble.txt: empty caption" (HTML)."""
    if item.caption_path is None:
        if item.caption:
            return (f"no {escape(extension)}: trains as “{escape(item.caption)}” "
                    f"({escape(item.caption_source)})")
        return (f"no {escape(extension)}: <span style='color:#e0a050'>trains with an empty "
                "caption</span> (write one, or set a trigger word)")
    if not item.caption:
        return (f"{escape(item.caption_path.name)}: <span style='color:#e0a050'>empty caption"
                "</span> (trains with no caption)")
    return escape(item.caption_path.name)


def token_note(window) -> str:
    """"75 of 123 tokens read, cut from “american flag”" or "12 of 75 tokens" (HTML)."""
    if window is None or not window.tokens:
        return ""
    if window.cut:
        tag = f", cut from “{escape(window.first_dropped_tag)}”" if window.first_dropped_tag \
            else ""
        return (f"<span style='color:#e0a050'>{window.kept} of {window.tokens} tokens read"
                f"{tag}</span>")
    return f"{window.tokens} of {window.limit} tokens"


class CaptionEditor(QWidget):
    """The image's name and caption source, the text box, the token count and the buttons."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("CaptionEditor")
        self.image_label = QLabel(NOTHING_SELECTED)
        self.image_label.setObjectName("CaptionImageLabel")
        self.image_label.setWordWrap(True)
        self.caption_edit = QPlainTextEdit()
        self.caption_edit.setObjectName("CaptionEdit")
        self.caption_edit.setPlaceholderText("Caption: describe what varies in this image.")
        self.caption_edit.setTabChangesFocus(True)
        self.caption_edit.setMinimumHeight(40)
        self.caption_edit.setEnabled(False)
        self.token_label = QLabel("")
        self.token_label.setObjectName("HintLabel")
        self.token_label.setWordWrap(True)
        self.save_button = QPushButton("Save caption")
        self.save_button.setObjectName("PrimaryButton")
        self.save_button.setToolTip("Write the caption file beside the image (Ctrl+S); an "
                                    "empty caption is saved as an empty file")
        self.revert_button = QPushButton("Revert")
        self.caption_status = QLabel("")
        self.caption_status.setObjectName("HintLabel")
        self.caption_status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.caption_status, 1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addWidget(self.image_label)
        layout.addWidget(self.caption_edit, 1)
        layout.addWidget(self.token_label)
        layout.addLayout(buttons)
        self._shown = ""  # the caption as shown, before any edit
        self.caption_edit.modificationChanged.connect(self.set_modified)
        self.set_modified(False)

    @property
    def modified(self) -> bool:
        return self.caption_edit.document().isModified()

    @property
    def changed(self) -> bool:
        """Edited into another caption than the one shown (typing and erasing is no change)."""
        return self.modified and self.text() != self._shown

    def text(self) -> str:
        """The caption as it is saved: one line, single spaces."""
        return " ".join(self.caption_edit.toPlainText().split())

    def show_item(self, item: DatasetItem, extension: str) -> None:
        """Edit `item`'s caption file (empty when it has none: the placeholder says what it
        trains with instead)."""
        self.show_note(item, extension)
        fallback = item.caption_path is None and item.caption
        self.caption_edit.setPlaceholderText(
            f"Trains as “{item.caption}” until you write a caption" if fallback
            else "Caption: describe what varies in this image.")
        text = item.caption if item.caption_path else ""
        self.caption_edit.setPlainText(text)
        self._shown = " ".join(text.split())
        self.caption_edit.setEnabled(True)
        self._clean()

    def show_note(self, item: DatasetItem, extension: str) -> None:
        self.image_label.setText(f"<b>{escape(item.image_path.name)}</b> · "
                                 f"{caption_note(item, extension)}")

    def show_nothing(self, text: str = NOTHING_SELECTED) -> None:
        self.image_label.setText(text)
        self.caption_edit.setPlaceholderText("Caption: describe what varies in this image.")
        self.caption_edit.setPlainText("")
        self._shown = ""
        self.caption_edit.setEnabled(False)
        self.token_label.setText("")
        self._clean()

    def set_busy(self, text: str) -> None:
        """Read-only while the folder is checked: the text stays, nothing can be changed."""
        self.caption_edit.setEnabled(False)
        self.save_button.setEnabled(False)
        self.revert_button.setEnabled(False)
        self.caption_status.setText(text)

    def mark_saved(self, text: str) -> None:
        self._shown = self.text()
        self.caption_edit.document().setModified(False)
        self.caption_status.setText(text)

    def set_tokens(self, window) -> None:
        self.token_label.setText(token_note(window))

    def set_modified(self, modified: bool) -> None:
        enabled = modified and self.caption_edit.isEnabled()
        self.save_button.setEnabled(enabled)
        self.revert_button.setEnabled(enabled)
        if modified:
            self.caption_status.setText("Unsaved changes")

    def _clean(self) -> None:
        self.caption_edit.document().setModified(False)
        self.caption_status.setText("")
        self.set_modified(False)
