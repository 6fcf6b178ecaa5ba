"""Dataset tab: open or drop a folder, see every image with its caption, edit captions, and read
the check report (skipped files with the reason, images without a caption).

The check (`check_dataset` decodes every image) and the thumbnails run in background pools; the
tab only ever touches widgets from the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QSettings, Qt, Signal
from PySide6.QtGui import QImage, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.dataset import DatasetReport, check_dataset
from lora_studio.core.errors import StudioError
from lora_studio.core.fileio import atomic_write_text
from lora_studio.ui.widgets.drop_zone import DropHint, dataset_folder_for
from lora_studio.ui.widgets.error_dialog import show_error
from lora_studio.ui.widgets.image_grid import GridEntry, ImageGrid, ImageGridModel, load_thumbnail
from lora_studio.ui.widgets.report_panel import ReportPanel
from lora_studio.ui.workers import TaskPool, failed_event

CAPTION_EXTENSION = ".txt"
KEY_LAST_FOLDER = "dataset/last_folder"
KEY_DEFAULT_CAPTION = "dataset/default_caption"


class DatasetTab(QWidget):
    """Signals: `report_changed(object)` with the current DatasetReport (or None) whenever the
    dataset or a caption changes; `status(str)` with a short message for the status bar."""

    report_changed = Signal(object)
    status = Signal(str)

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DatasetTab")
        self._settings = settings
        self._report: DatasetReport | None = None
        self._folder: Path | None = None
        self._scan_generation = 0
        self._scanning = False
        self._current_row = -1
        self._scan_pool = TaskPool(max_threads=1, parent=self)
        self._thumb_pool = TaskPool(max_threads=2, parent=self)
        self.model = ImageGridModel(self)
        self._build()
        self.trigger_edit.setText(str(settings.value(KEY_DEFAULT_CAPTION, "") or ""))

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.open_button = QPushButton("Open folder…")
        self.open_button.setObjectName("PrimaryButton")
        self.open_button.clicked.connect(self.open_folder_dialog)
        self.folder_label = QLabel("No folder open")
        self.folder_label.setObjectName("FolderLabel")
        self.folder_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.rescan_button = QPushButton("Check again")
        self.rescan_button.setToolTip("Scan the folder again (after adding or fixing files)")
        self.rescan_button.clicked.connect(self.rescan)
        self.rescan_button.setEnabled(False)
        top = QHBoxLayout()
        top.addWidget(self.open_button)
        top.addWidget(self.folder_label, 1)
        top.addWidget(self.rescan_button)

        self.drop_hint = DropHint()
        self.drop_hint.open_requested.connect(self.open_folder_dialog)
        self.grid = ImageGrid()
        self.grid.setModel(self.model)
        self.grid.selectionModel().currentChanged.connect(self._on_current_changed)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.drop_hint)
        self.stack.addWidget(self.grid)

        splitter = QSplitter(Qt.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.stack)
        splitter.addWidget(self._build_side_panel())
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([640, 360])
        self.splitter = splitter

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(10)
        self.banner = QLabel("")
        self.banner.setObjectName("FirstRunBanner")
        self.banner.setWordWrap(True)
        self.banner.hide()
        layout.addWidget(self.banner)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)
        save = QShortcut(QKeySequence.Save, self)
        save.setContext(Qt.WidgetWithChildrenShortcut)
        save.activated.connect(self.save_caption)

    def show_banner(self, text: str) -> None:
        """A note above the grid (the first-run tour); "" hides it."""
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def _build_side_panel(self) -> QWidget:
        self.trigger_edit = QLineEdit()
        self.trigger_edit.setObjectName("TriggerEdit")
        self.trigger_edit.setPlaceholderText("e.g. zqstar")
        self.trigger_edit.setToolTip("Used as the caption of images that have no caption file, "
                                     "and stored in the LoRA as its trigger word.")
        self.trigger_edit.editingFinished.connect(self._on_default_caption_edited)
        trigger_box = QGroupBox("Trigger word / default caption")
        trigger_layout = QVBoxLayout(trigger_box)
        trigger_layout.addWidget(self.trigger_edit)

        self.image_label = QLabel("Select an image to edit its caption.")
        self.image_label.setObjectName("CaptionImageLabel")
        self.image_label.setWordWrap(True)
        self.caption_edit = QPlainTextEdit()
        self.caption_edit.setObjectName("CaptionEdit")
        self.caption_edit.setPlaceholderText("Caption: describe what varies in this image.")
        self.caption_edit.setTabChangesFocus(True)
        self.caption_edit.setFixedHeight(84)
        self.caption_edit.setEnabled(False)
        self.caption_edit.modificationChanged.connect(self._on_caption_modified)
        self.save_button = QPushButton("Save caption")
        self.save_button.setObjectName("PrimaryButton")
        self.save_button.setToolTip("Write the caption file beside the image (Ctrl+S)")
        self.save_button.clicked.connect(self.save_caption)
        self.revert_button = QPushButton("Revert")
        self.revert_button.clicked.connect(self._show_caption_of_current)
        self.caption_status = QLabel("")
        self.caption_status.setObjectName("HintLabel")
        buttons = QHBoxLayout()
        buttons.addWidget(self.caption_status, 1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)
        caption_box = QGroupBox("Caption")
        caption_layout = QVBoxLayout(caption_box)
        caption_layout.addWidget(self.image_label)
        caption_layout.addWidget(self.caption_edit)
        caption_layout.addLayout(buttons)
        self._on_caption_modified(False)

        self.report_panel = ReportPanel()
        report_box = QGroupBox("Check report")
        report_layout = QVBoxLayout(report_box)
        report_layout.addWidget(self.report_panel)

        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.setSpacing(10)
        side_layout.addWidget(trigger_box)
        side_layout.addWidget(caption_box)
        side_layout.addWidget(report_box, 1)
        side.setMinimumWidth(300)
        return side

    # ------------------------------------------------------------------ public API
    @property
    def report(self) -> DatasetReport | None:
        return self._report

    @property
    def folder(self) -> Path | None:
        return self._folder

    @property
    def is_scanning(self) -> bool:
        return self._scanning

    @property
    def default_caption(self) -> str:
        return self.trigger_edit.text().strip()

    def open_folder_dialog(self) -> None:
        start = str(self._folder or self._settings.value(KEY_LAST_FOLDER, "") or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", start)
        if folder:
            self.load_folder(Path(folder))

    def load_paths(self, paths: list[Path]) -> bool:
        """Open what was dropped: a folder, or the folder of dropped image files."""
        folder = dataset_folder_for(paths)
        if folder is None:
            names = ", ".join(p.name for p in paths[:3]) or "nothing"
            self.status.emit(f"Not a folder or an image: {names}. Drop a folder of images.")
            return False
        self.load_folder(folder)
        return True

    def load_folder(self, folder: Path) -> None:
        """Check `folder` in the background; the grid and report fill in when it is done."""
        self._autosave()
        folder = Path(folder)
        self._folder = folder
        self._settings.setValue(KEY_LAST_FOLDER, str(folder))
        self.folder_label.setText(str(folder))
        self.folder_label.setToolTip(str(folder))
        self.rescan()

    def rescan(self) -> None:
        if self._folder is None:
            return
        self._scan_generation += 1
        generation = self._scan_generation
        self._scanning = True
        self.rescan_button.setEnabled(False)
        self.report_panel.show_message(f"Checking {self._folder.name}…")
        self.status.emit(f"Checking {self._folder}…")
        folder, default = self._folder, self.default_caption
        self._scan_pool.submit(
            lambda: check_dataset(folder, caption_extension=CAPTION_EXTENSION,
                                  default_caption=default),
            lambda report: self._on_scanned(generation, report),
            lambda exc: self._on_scan_failed(generation, exc))

    def select_row(self, row: int) -> None:
        index = self.model.index(row)
        self.grid.selectionModel().setCurrentIndex(index, QItemSelectionModel.ClearAndSelect)

    def save_caption(self) -> bool:
        """Write the edited caption beside the current image (atomically); True when written."""
        row = self._current_row
        if self._report is None or not 0 <= row < len(self._report.items):
            return False
        item = self._report.items[row]
        text = " ".join(self.caption_edit.toPlainText().split())
        target = item.caption_path or item.image_path.with_suffix(CAPTION_EXTENSION)
        try:
            atomic_write_text(target, text)
        except OSError as exc:
            show_error(self, f"Could not save the caption to {target}: {exc.strerror or exc}",
                       "Check that the folder is writable.")
            return False
        if text:
            item.caption, item.caption_path = text, target
            if item.image_path in self._report.missing_captions:
                self._report.missing_captions.remove(item.image_path)
        else:  # an empty caption file means "use the default caption"
            item.caption, item.caption_path = self._report.default_caption, None
            if item.image_path not in self._report.missing_captions:
                self._report.missing_captions.append(item.image_path)
        self.model.set_caption(row, item.caption, item.caption_path is not None)
        self.caption_edit.document().setModified(False)
        self.caption_status.setText(f"Saved to {target.name}")
        self.report_panel.show_report(self._report)
        self.report_changed.emit(self._report)
        return True

    def shutdown(self) -> None:
        """Stop background work before the window goes away."""
        self._autosave()
        self._scan_generation += 1
        self._scan_pool.shutdown()
        self._thumb_pool.shutdown()

    # ------------------------------------------------------------------ scan results
    def _on_scanned(self, generation: int, report: DatasetReport) -> None:
        if generation != self._scan_generation:
            return  # a newer scan superseded this one
        self._scanning = False
        self.rescan_button.setEnabled(True)
        self._report = report
        self._current_row = -1
        self._thumb_pool.cancel_pending()
        self.model.set_entries([GridEntry(item.image_path, item.caption,
                                          item.caption_path is not None)
                                for item in report.items])
        self.stack.setCurrentWidget(self.grid if report.items else self.drop_hint)
        self._show_caption_of_current()
        self.report_panel.show_report(report)
        self.status.emit(f"{report.root.name}: {report.usable} usable, "
                         f"{len(report.skipped)} skipped")
        self.report_changed.emit(report)
        for row, item in enumerate(report.items):
            path = item.image_path
            self._thumb_pool.submit(lambda p=path: load_thumbnail(p),
                                    lambda image, r=row, g=generation: self._on_thumb(g, r, image),
                                    lambda exc, r=row, g=generation: self._on_thumb(g, r, QImage()))
        if report.items:
            self.select_row(0)

    def _on_scan_failed(self, generation: int, exc: BaseException) -> None:
        if generation != self._scan_generation:
            return
        self._scanning = False
        self.rescan_button.setEnabled(True)
        self._report = None
        self.model.set_entries([])
        self.stack.setCurrentWidget(self.drop_hint)
        failed = failed_event(exc)
        self.report_panel.show_message(failed.message)
        self.status.emit("The folder could not be checked.")
        self.report_changed.emit(None)
        if not isinstance(exc, StudioError):
            show_error(self, failed.message, failed.details)

    def _on_thumb(self, generation: int, row: int, image: QImage) -> None:
        if generation == self._scan_generation:
            self.model.set_thumbnail(row, image)

    # ------------------------------------------------------------------ captions
    def _on_current_changed(self, current, previous) -> None:
        self._autosave()
        self._current_row = current.row() if current.isValid() else -1
        self._show_caption_of_current()

    def _autosave(self) -> None:
        """Unsaved caption edits are saved when another image is selected (never dropped)."""
        if self.caption_edit.document().isModified():
            self.save_caption()

    def _show_caption_of_current(self) -> None:
        row = self._current_row
        has_item = self._report is not None and 0 <= row < len(self._report.items)
        self.caption_edit.setEnabled(has_item)
        if not has_item:
            self.image_label.setText("Select an image to edit its caption.")
            self.caption_edit.setPlainText("")
        else:
            item = self._report.items[row]
            source = (item.caption_path.name if item.caption_path
                      else f"no {CAPTION_EXTENSION} file yet: saving creates one")
            self.image_label.setText(f"<b>{item.image_path.name}</b> · {source}")
            self.caption_edit.setPlainText(item.caption if item.caption_path else "")
        self.caption_edit.document().setModified(False)
        self.caption_status.setText("")
        self._on_caption_modified(False)

    def _on_caption_modified(self, modified: bool) -> None:
        self.save_button.setEnabled(modified)
        self.revert_button.setEnabled(modified)
        if modified:
            self.caption_status.setText("Unsaved changes")

    def _on_default_caption_edited(self) -> None:
        text = self.default_caption
        self._settings.setValue(KEY_DEFAULT_CAPTION, text)
        if self._report is None or text == self._report.default_caption:
            return
        self._report.default_caption = text
        for row, item in enumerate(self._report.items):
            if item.caption_path is None:
                item.caption = text
                self.model.set_caption(row, text, False)
        self.report_panel.show_report(self._report)
        self.report_changed.emit(self._report)
