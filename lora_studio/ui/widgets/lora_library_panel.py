"""The library list of the Mix tab: every LoRA file with what it is, and the selected one's
full inspect report and A1111 card (activation text, preferred weight, notes). Binds to a
`LoraLibrary`; the buttons are the tab's to connect."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lora_studio.ui.lora_library import LibraryItem, LoraLibrary

EMPTY_HINT = ("No LoRAs yet. Train one on the Train tab, or drop .safetensors files or a "
              "folder of them here.")


class LoraLibraryPanel(QWidget):
    add_requested = Signal(object)  # Path: "Add to stack" (or a double click)
    selection_changed = Signal(object)  # the selected LibraryItem, or None

    def __init__(self, library: LoraLibrary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.list = QListWidget()
        self.list.setObjectName("LoraLibraryList")
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        self.list.itemDoubleClicked.connect(lambda item: self._request_add(item))
        self.list.currentItemChanged.connect(lambda *_: self._show_selected())
        self.details = QTextBrowser()
        self.details.setObjectName("LoraDetails")
        self.details.setPlaceholderText("Select a LoRA to see what it holds.")
        self.details.setMinimumHeight(120)
        self.add_files_button = QPushButton("Add files…")
        self.add_files_button.setToolTip("Add LoRA .safetensors files to the library")
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.setToolTip("Add every LoRA in a folder (and its subfolders); "
                                          "new files there appear on Rescan")
        self.rescan_button = QToolButton()
        self.rescan_button.setText("↻")
        self.rescan_button.setToolTip("Look for new or deleted files in the library's folders "
                                      "and read edited A1111 cards (.json) again")
        self.stack_button = QPushButton("Add to stack")
        self.stack_button.setObjectName("PrimaryButton")
        self.stack_button.setToolTip("Stack the selected LoRA (double click does it too)")
        self.stack_button.clicked.connect(lambda: self._request_add(self.list.currentItem()))
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save a copy in kohya layout (A1111, ComfyUI, Forge) or "
                                      "diffusers layout, metadata kept")
        self.remove_button = QToolButton()
        self.remove_button.setText("✕")
        self.remove_button.setToolTip("Remove from the library (the file is not deleted)")

        top = QHBoxLayout()
        for button in (self.add_files_button, self.add_folder_button, self.rescan_button):
            top.addWidget(button)
        top.addStretch(1)
        actions = QHBoxLayout()
        actions.addWidget(self.stack_button, 1)
        actions.addWidget(self.export_button)
        actions.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.list, 3)
        layout.addLayout(actions)
        layout.addWidget(self.details, 2)
        library.changed.connect(self.refresh)
        self.refresh()

    def selected(self) -> LibraryItem | None:
        item = self.list.currentItem()
        return self.library.item(item.data(Qt.UserRole)) if item is not None else None

    def select(self, path: str | Path) -> None:
        for row in range(self.list.count()):
            if Path(self.list.item(row).data(Qt.UserRole)) == Path(path):
                self.list.setCurrentRow(row)
                return

    def refresh(self) -> None:
        current = self.selected()
        self.list.blockSignals(True)
        self.list.clear()
        for entry in self.library.items:
            item = QListWidgetItem(_item_text(entry))
            item.setData(Qt.UserRole, str(entry.path))
            item.setToolTip(str(entry.path) + ("\n" + entry.error if entry.error else ""))
            if entry.error:
                item.setForeground(QColor("#ff8a80"))
            self.list.addItem(item)
        if self.list.count() == 0:
            hint = QListWidgetItem(EMPTY_HINT)
            hint.setFlags(Qt.NoItemFlags)
            self.list.addItem(hint)
        self.list.blockSignals(False)
        if current is not None:
            self.select(current.path)
        self._show_selected()

    def _request_add(self, item: QListWidgetItem | None) -> None:
        if item is not None and item.data(Qt.UserRole):
            self.add_requested.emit(Path(item.data(Qt.UserRole)))

    def _show_selected(self) -> None:
        entry = self.selected()
        usable = entry is not None and entry.usable
        self.stack_button.setEnabled(usable)
        self.export_button.setEnabled(usable)
        self.remove_button.setEnabled(entry is not None)
        if entry is None:
            self.details.clear()
        elif entry.info is not None:
            from lora_studio.core.lora.inspect import format_inspection

            self.details.setPlainText(format_inspection(entry.info) + card_text(entry))
        else:
            self.details.setPlainText(entry.summary())
        self.selection_changed.emit(entry)


def _item_text(entry: LibraryItem) -> str:
    lines = [entry.name, "   " + entry.summary()]
    if entry.activation_text:
        lines.append("   activation text: " + entry.activation_text)
    elif entry.trigger_words:
        lines.append("   trigger: " + ", ".join(entry.trigger_words))
    if entry.card is not None and entry.card.weight is not None:
        lines.append(f"   preferred weight: {entry.card.weight:g}")
    if entry.card_note:
        lines.append("   card: " + entry.card_note)
    return "\n".join(lines)


def card_text(entry: LibraryItem) -> str:
    """The A1111 card's part of the details ("" when there is no card)."""
    card, lines = entry.card, []
    if card is not None:
        weight = f"{card.weight:g}" if card.weight is not None else "not set"
        lines += ["", f"A1111 card ({entry.path.stem}.json)",
                  f"  activation text: {card.activation_text or '—'}",
                  f"  preferred weight: {weight}"]
        for label, text in (("negative text", card.negative_text),
                            ("description", card.description), ("notes", card.notes)):
            if text.strip():
                lines.append(f"  {label}: {text.strip()}")
    if entry.card_note:
        lines += ["", f"Card ignored in part: {entry.card_note}"]
    return "\n".join(lines)
