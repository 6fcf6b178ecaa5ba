"""The Folders box of the Dataset tab: one row per folder of the dataset (its name, images,
repeats per epoch and the caption of its images without a caption file), "Add folder…",
"Remove" and "Reset".

A thin widget: it shows `FolderRow`s and says what the person changed through signals; the tab
turns the dataset into a list of folders (layout "subsets") and checks it again.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from lora_studio.ui.dataset_session import FolderRow

MAX_REPEATS = 1000
VISIBLE_ROWS = 4  # rows shown before the table scrolls
COLUMNS = ("Folder", "Images", "Repeats", "Per epoch", "Uncaptioned images train as")
EDIT_DELAY_MS = 400  # arrow clicks on a repeats box are gathered into one check


class FoldersBox(QGroupBox):
    """Signals: `repeats_changed(row, repeats)`, `caption_changed(row, text)`,
    `add_requested()`, `remove_requested(row)`, `reset_requested()`."""

    repeats_changed = Signal(int, int)
    caption_changed = Signal(int, str)
    add_requested = Signal()
    remove_requested = Signal(int)
    reset_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Folders", parent)
        self.setObjectName("FoldersBox")
        self._rows: list[FolderRow] = []
        self._pending: dict[int, int] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(EDIT_DELAY_MS)
        self._timer.timeout.connect(self._flush_repeats)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("FoldersTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for column in (1, 2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.layout_label = QLabel("")
        self.layout_label.setObjectName("HintLabel")
        self.add_button = QPushButton("Add folder…")
        self.add_button.setToolTip("Train another folder of images too (kept in its own "
                                   "[[dataset.subsets]] table)")
        self.add_button.clicked.connect(self.add_requested)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Stop training the selected folder (no file is deleted)")
        self.remove_button.clicked.connect(self._remove_selected)
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip("Back to the folders the opened folder holds")
        self.reset_button.clicked.connect(self.reset_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.layout_label, 1)
        buttons.addWidget(self.reset_button)
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.add_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(4)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self.set_rows([], "folder")

    # ------------------------------------------------------------------ showing
    def set_rows(self, rows: list[FolderRow], layout: str) -> None:
        """Show `rows`; `layout` is the report's ("folder", "kohya" or "subsets")."""
        self._timer.stop()
        self._pending.clear()
        selected = self.selected_row()
        self._rows = list(rows)
        self.table.setRowCount(len(rows))
        for number, row in enumerate(rows):
            self._fill(number, row)
        shown = min(max(len(rows), 1), VISIBLE_ROWS)
        height = self.table.horizontalHeader().sizeHint().height() + 2 + sum(
            self.table.rowHeight(r) for r in range(shown)) + (0 if rows else 28)
        self.table.setFixedHeight(height)
        if 0 <= selected < len(rows):
            self.table.selectRow(selected)
        self.layout_label.setText({
            "kohya": "kohya folder: N_name subfolders, N repeats each",
            "subsets": "listed folders (kept for this folder)"}.get(layout, "one folder"))
        self.reset_button.setVisible(layout == "subsets")
        self._update_buttons()

    def _fill(self, number: int, row: FolderRow) -> None:
        name = QTableWidgetItem(row.path.name)
        name.setToolTip(str(row.path))
        self.table.setItem(number, 0, name)
        images = QTableWidgetItem(str(row.images))
        images.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.table.setItem(number, 1, images)
        spin = QSpinBox()
        spin.setRange(1, MAX_REPEATS)
        spin.setValue(min(max(row.repeats, 1), MAX_REPEATS))
        spin.setKeyboardTracking(False)
        spin.setToolTip("How many times each image of this folder trains per epoch")
        spin.valueChanged.connect(lambda value, n=number: self._on_repeats(n, value))
        self.table.setCellWidget(number, 2, spin)
        per_epoch = QTableWidgetItem(str(row.per_epoch))
        per_epoch.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.table.setItem(number, 3, per_epoch)
        caption = QLineEdit(row.caption)
        caption.setPlaceholderText("the default caption / trigger word")
        caption.setToolTip("The caption of this folder's images that have no caption file")
        caption.setFrame(False)
        caption.editingFinished.connect(
            lambda n=number, edit=caption: self._on_caption(n, edit.text()))
        self.table.setCellWidget(number, 4, caption)

    def row_count(self) -> int:
        return self.table.rowCount()

    def repeats_box(self, row: int) -> QSpinBox:
        return self.table.cellWidget(row, 2)

    def caption_edit(self, row: int) -> QLineEdit:
        return self.table.cellWidget(row, 4)

    def selected_row(self) -> int:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return rows[0].row() if rows else -1

    def row_text(self, row: int) -> str:
        """A row as plain text: "name  images  repeats  per epoch  caption" (for tests)."""
        r = self._rows[row]
        return f"{r.path.name}  {r.images}  {self.repeats_box(row).value()}  {r.per_epoch}  " \
               f"{self.caption_edit(row).text()}"

    # ------------------------------------------------------------------ editing
    def _on_repeats(self, row: int, value: int) -> None:
        if 0 <= row < len(self._rows):
            self.table.item(row, 3).setText(str(value * self._rows[row].images))
            self._pending[row] = value
            self._timer.start()

    def _flush_repeats(self) -> None:
        pending, self._pending = self._pending, {}
        for row, value in pending.items():
            if value != self._rows[row].repeats:
                self.repeats_changed.emit(row, value)

    def flush(self) -> None:
        """Send a repeats edit still waiting for the delay now."""
        if self._timer.isActive():
            self._timer.stop()
            self._flush_repeats()

    def _on_caption(self, row: int, text: str) -> None:
        if 0 <= row < len(self._rows) and text.strip() != self._rows[row].caption:
            self.caption_changed.emit(row, text.strip())

    def _remove_selected(self) -> None:
        row = self.selected_row()
        if row >= 0:
            self.remove_requested.emit(row)

    def _update_buttons(self) -> None:
        self.remove_button.setEnabled(self.selected_row() >= 0 and self.table.rowCount() > 1)
