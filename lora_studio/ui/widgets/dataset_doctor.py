"""The Dataset tab's "Doctor": what is worth fixing before training (duplicates, look-alikes,
hard crops, upscaled images, caption problems, from `core.dataset.doctor`), the tag table, and
the tag tools (`tag_tools.TagTools`) to fix captions in bulk.

`DoctorPanel` is the view; `DatasetTools` wires it to the tab and its session: the doctor and
every tag edit run in the session's pool, results come back here in the GUI thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.dataset import doctor
from lora_studio.ui.widgets.tag_tools import TagTools
from lora_studio.ui.workers import failed_event

if TYPE_CHECKING:
    from lora_studio.ui.tabs.dataset_tab import DatasetTab

KIND_TITLES = {
    doctor.SKIPPED: "Skipped files",
    doctor.EXACT_DUPLICATE: "Duplicates",
    doctor.NEAR_DUPLICATE: "Look-alikes",
    doctor.EXTREME_ASPECT: "Hard crops",
    doctor.UPSCALED: "Upscaled",
    doctor.MISSING_CAPTION: "Missing captions",
    doctor.EMPTY_CAPTION: "Empty captions",
    doctor.LONG_CAPTION: "Long captions",
}
FINDING_ROLE = Qt.UserRole  # a finding row holds its images (a tuple of Path)


class _WrappedRows(QStyledItemDelegate):
    """Rows as tall as their text wrapped at the column's width (a tree's rows do not grow by
    themselves)."""

    def sizeHint(self, option, index) -> QSize:  # noqa: N802 - Qt's API
        tree = self.parent()
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        depth, parent = 0, index.parent()
        while parent.isValid():
            depth, parent = depth + 1, parent.parent()
        width = max(80, tree.viewport().width() - tree.indentation() * (depth + 1) - 8)
        text = opt.fontMetrics.boundingRect(QRect(0, 0, width, 100_000),
                                            Qt.TextWordWrap, opt.text)
        return QSize(width, text.height() + 6)


class _FindingsTree(QTreeWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("DoctorFindings")
        self.setHeaderHidden(True)
        self.setWordWrap(True)
        self.setUniformRowHeights(False)
        self.setTextElideMode(Qt.ElideNone)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.setItemDelegate(_WrappedRows(self))
        self._relayout = QTimer(self, singleShot=True, interval=0)
        self._relayout.timeout.connect(self.doItemsLayout)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's API
        super().resizeEvent(event)
        self._relayout.start()  # the rows' heights follow the new width


class DoctorPanel(QWidget):
    """Run button, findings grouped by kind, tag table, tag tools. Signals: `run_requested()`,
    `image_clicked(Path)` (a finding or a "lacking" image was clicked)."""

    run_requested = Signal()
    image_clicked = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DoctorPanel")
        self.run_button = QPushButton("Run the doctor")
        self.run_button.setToolTip("Look for duplicates, look-alikes, hard crops, upscaled "
                                   "images and caption problems")
        self.run_button.clicked.connect(self.run_requested)
        self.summary = QLabel("Finds duplicates, hard crops and caption problems.")
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addWidget(self.summary, 1)

        self.findings = _FindingsTree()
        self.findings.itemClicked.connect(self._on_finding_clicked)
        self.tag_table = QTableWidget(0, 2)
        self.tag_table.setObjectName("TagTable")
        self.tag_table.setHorizontalHeaderLabels(["Tag", "Images"])
        self.tag_table.verticalHeader().hide()
        self.tag_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.tag_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        header = self.tag_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.tag_table.setMinimumWidth(170)
        self.tag_table.setMaximumWidth(260)
        self.tag_table.setToolTip("How many images each tag is in (click one to edit it)")
        self.tag_table.itemClicked.connect(self._on_tag_clicked)

        self.tools = TagTools()
        self.tools.image_clicked.connect(self.image_clicked)

        lower = QSplitter(Qt.Horizontal)
        lower.setChildrenCollapsible(False)
        lower.addWidget(self.findings)
        lower.addWidget(self.tag_table)
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 1)
        lower.setSizes([320, 220])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)
        layout.addWidget(self.tools)
        layout.addLayout(top)
        layout.addWidget(lower, 1)

    def show_message(self, text: str, busy: bool = False) -> None:
        self.summary.setText(text)
        self.run_button.setEnabled(not busy)

    def show_report(self, report: doctor.DoctorReport) -> None:
        """The findings, one group per kind (`doctor.KINDS` order), and the tag table."""
        self.findings.clear()
        for kind in doctor.KINDS:
            found = report.of(kind)
            if not found:
                continue
            group = QTreeWidgetItem([f"{KIND_TITLES.get(kind, kind)} ({len(found)})"])
            font = group.font(0)
            font.setBold(True)
            group.setFont(0, font)
            group.setFlags(Qt.ItemIsEnabled)
            for finding in found:
                row = QTreeWidgetItem(group, [finding.message])
                row.setToolTip(0, finding.message)
                row.setData(0, FINDING_ROLE, finding.images)
            self.findings.addTopLevelItem(group)
        self.findings.expandAll()
        self.tag_table.setRowCount(len(report.tags))
        self.tag_table.setSortingEnabled(False)
        for row, (tag, count) in enumerate(report.tags):
            name = QTableWidgetItem(tag)
            name.setToolTip(tag)
            self.tag_table.setItem(row, 0, name)
            number = QTableWidgetItem()
            number.setData(Qt.DisplayRole, count)
            self.tag_table.setItem(row, 1, number)
        n, images = len(report.findings), report.plan.report.usable
        self.show_message(f"{n} finding{'' if n == 1 else 's'} in {images} images, "
                          f"{len(report.tags)} tags." if n else
                          f"Nothing to fix in {images} images; {len(report.tags)} tags.")

    def finding_items(self, kind: str) -> list[QTreeWidgetItem]:
        """The rows of `kind`'s findings (for tests and the tour)."""
        title = KIND_TITLES.get(kind, kind)
        for i in range(self.findings.topLevelItemCount()):
            group = self.findings.topLevelItem(i)
            if group.text(0).startswith(title + " ("):
                return [group.child(j) for j in range(group.childCount())]
        return []

    def _on_finding_clicked(self, item: QTreeWidgetItem, _column: int) -> None:
        images = item.data(0, FINDING_ROLE)
        if images:
            self.image_clicked.emit(Path(images[0]))

    def _on_tag_clicked(self, item: QTableWidgetItem) -> None:
        self.tools.tag_edit.setText(self.tag_table.item(item.row(), 0).text())


class DatasetTools(QObject):
    """Wires the tab's `DoctorPanel` to its session (GUI thread only)."""

    def __init__(self, tab: DatasetTab) -> None:
        super().__init__(tab)
        self.tab, self.session = tab, tab.session
        self.panel: DoctorPanel = tab.side_panel.doctor
        self.tools: TagTools = self.panel.tools
        self._undoing = False
        p, s, t = self.panel, self.session, self.tools
        p.run_requested.connect(self.run_doctor)
        p.image_clicked.connect(self.select_image)
        t.apply_requested.connect(self.apply)
        t.undo_requested.connect(self.undo)
        t.operation_combo.currentIndexChanged.connect(self._on_operation_changed)
        s.doctor_ready.connect(self._on_doctor)
        s.doctor_failed.connect(lambda exc: p.show_message(failed_event(exc).message))
        s.tags_edited.connect(self._on_edited)
        s.tags_lacking.connect(self._on_lacking)
        s.tags_failed.connect(self._on_failed)

    def _save_first(self) -> None:
        if self.tab.editor.changed:  # the tab's autosave: an unsaved edit is never lost
            self.tab.save_caption()

    def run_doctor(self) -> None:
        if self.tab.folder is None:
            self.panel.show_message("Open a folder first.")
            return
        self._save_first()
        self.panel.show_message("Examining every image…", busy=True)
        self.session.run_doctor()

    def _on_doctor(self, report: doctor.DoctorReport) -> None:
        self.panel.show_report(report)
        self.tab.status.emit(f"Doctor: {self.panel.summary.text()}")

    def select_image(self, path: Path) -> None:
        row = self.tab.model.row_of(Path(path))
        if row >= 0:
            self.tab.select_row(row)

    def apply(self, operation: str, text: str, other: str, selected_only: bool) -> None:
        self._save_first()
        images = None
        if selected_only and operation != "missing":
            item = self.tab._item()  # the grid is single-selection: its current image
            if item is None:
                self.tools.show_message("Select an image in the grid first.")
                return
            images = [item.image_path]
        if not self.session.edit_tags(operation, text, other, images):
            self.tools.show_message("Wait until the folder is checked.")
            return
        self._undoing = False
        self.tools.set_busy(True, False)
        self.tools.show_message("Working…")

    def undo(self) -> None:
        self._save_first()
        if self.session.undo_tags():
            self._undoing = True
            self.tools.set_busy(True, False)

    def _on_edited(self, changes: list) -> None:
        self.tab.refresh_captions([c.image_path for c in changes])
        n = len(changes)
        captions = f"{n} caption{'' if n == 1 else 's'}"
        text = f"Undone: {captions} put back" if self._undoing else \
            f"{captions} changed" if n else "No caption changed"
        created = 0 if self._undoing else sum(c.created for c in changes)
        if created:
            text += f" ({created} caption file{'' if created == 1 else 's'} created)"
        self.tools.show_message(text + ".")
        self.tools.set_busy(False, self.session.can_undo_tags)
        self.tab.status.emit(text)

    def _on_lacking(self, images: list[Path]) -> None:
        self.tools.set_busy(False, self.session.can_undo_tags)
        report = self.tab.report
        total = report.usable if report else 0
        text = f"{len(images)} of {total} images lack {self.tools.tag_edit.text().strip()!r}."
        self.tools.show_message(text)
        self.tab.status.emit(text)
        self.tools.show_lacking(images, report.root if report else None)
        if images:
            self.select_image(images[0])

    def _on_failed(self, exc: BaseException) -> None:
        self.tools.set_busy(False, self.session.can_undo_tags)
        self.tools.show_message(failed_event(exc).message)

    def _on_operation_changed(self, _index: int) -> None:
        if self.tools.operation == "trigger" and not self.tools.tag_edit.text().strip():
            self.tools.tag_edit.setText(self.tab.default_caption)
