"""Tag tools of the Dataset tab: one compact row to add, remove or replace a tag in every
caption (or the selected image's), put the trigger word first, or list the images whose caption
lacks a tag; Undo puts the files of the last edit back exactly.

The widget only asks (`apply_requested`, `undo_requested`) and shows what it is told; the edit
itself runs in the session's pool (`DatasetSession.edit_tags`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

# (combo label, operation of `DatasetSession.edit_tags`, first field's hint, second field's)
OPERATIONS = (
    ("Add tag", "add", "tag to add", ""),
    ("Remove tag", "remove", "tag to remove", ""),
    ("Replace", "replace", "tag to replace", "new tag"),
    ("Put trigger word first", "trigger", "trigger word", ""),
    ("Show images lacking a tag", "missing", "tag", ""),
)


class TagTools(QWidget):
    """Signals: `apply_requested(operation, text, other, selected_only)`, `undo_requested()`,
    `image_clicked(Path)` when an image of the "lacking" list is clicked."""

    apply_requested = Signal(str, str, str, bool)
    undo_requested = Signal()
    image_clicked = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TagTools")
        self.operation_combo = QComboBox()
        for label, operation, _hint, _other in OPERATIONS:
            self.operation_combo.addItem(label, operation)
        self.tag_edit = QLineEdit()
        self.other_edit = QLineEdit()
        self.selected_check = QCheckBox("Selected image only")
        self.selected_check.setToolTip("Edit only the image selected in the grid (otherwise "
                                       "every image of the dataset)")
        self.apply_button = QPushButton("Apply")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Put back the caption files of the last tag edit exactly")
        self.undo_button.setEnabled(False)
        self.message = QLabel("")
        self.message.setObjectName("TagToolsMessage")
        self.message.setWordWrap(True)
        self.message.hide()
        self.lacking_list = QListWidget()
        self.lacking_list.setObjectName("LackingList")
        self.lacking_list.setMaximumHeight(96)
        self.lacking_list.hide()

        first = QHBoxLayout()
        first.addWidget(self.operation_combo)
        first.addWidget(self.tag_edit, 1)
        first.addWidget(self.other_edit, 1)
        second = QHBoxLayout()
        second.addWidget(self.selected_check)
        second.addStretch(1)
        second.addWidget(self.apply_button)
        second.addWidget(self.undo_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addLayout(first)
        layout.addLayout(second)
        layout.addWidget(self.message)
        layout.addWidget(self.lacking_list)

        self.operation_combo.currentIndexChanged.connect(self._on_operation_changed)
        self.apply_button.clicked.connect(self.apply)
        self.tag_edit.returnPressed.connect(self.apply)
        self.other_edit.returnPressed.connect(self.apply)
        self.undo_button.clicked.connect(self.undo_requested)
        self.lacking_list.itemClicked.connect(
            lambda item: self.image_clicked.emit(item.data(Qt.UserRole)))
        self._on_operation_changed()

    @property
    def operation(self) -> str:
        return str(self.operation_combo.currentData())

    def set_operation(self, operation: str) -> None:
        self.operation_combo.setCurrentIndex(self.operation_combo.findData(operation))

    def apply(self) -> None:
        if self.apply_button.isEnabled():
            self.apply_requested.emit(self.operation, self.tag_edit.text(),
                                      self.other_edit.text(), self.selected_check.isChecked())

    def set_busy(self, busy: bool, can_undo: bool) -> None:
        self.apply_button.setEnabled(not busy)
        self.undo_button.setEnabled(not busy and can_undo)

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def show_lacking(self, images: list[Path], root: Path | None) -> None:
        """List the images that lack the tag (clicking one selects it in the grid)."""
        self.lacking_list.clear()
        for path in images:
            try:
                shown = str(path.relative_to(root)) if root else path.name
            except ValueError:
                shown = str(path)
            item = QListWidgetItem(shown)
            item.setData(Qt.UserRole, path)
            self.lacking_list.addItem(item)
        self.lacking_list.setVisible(bool(images))

    def _on_operation_changed(self, _index: int = 0) -> None:
        _label, operation, hint, other = OPERATIONS[max(0, self.operation_combo.currentIndex())]
        self.tag_edit.setPlaceholderText(hint)
        self.other_edit.setPlaceholderText(other)
        self.other_edit.setVisible(bool(other))
        self.selected_check.setEnabled(operation != "missing")
        self.apply_button.setText("Show" if operation == "missing" else "Apply")
        if operation != "missing":
            self.lacking_list.hide()
