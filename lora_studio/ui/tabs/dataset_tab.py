"""Dataset tab: open or drop a folder (a plain one or a kohya folder of `N_name` subfolders), see
every image with its caption, set each folder's repeats, edit captions, see what the model sees
of an image, and read what training will do (folders, buckets, steps, long captions).

The check, the plan, token counts and previews run in background pools (`DatasetSession`), the
thumbnails in the tab's own pool; the tab only ever touches widgets from the GUI thread. An
unsaved caption is saved before anything replaces it (another image, another folder, a new
check, closing the window).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.dataset import DatasetItem, DatasetReport
from lora_studio.core.dataset.plan import DatasetPlan
from lora_studio.core.errors import StudioError
from lora_studio.core.train.config import TrainConfig
from lora_studio.ui.dataset_session import DatasetSession
from lora_studio.ui.widgets.dataset_doctor import DatasetTools
from lora_studio.ui.widgets.dataset_folders import FoldersBox
from lora_studio.ui.widgets.dataset_side_panel import DatasetSidePanel
from lora_studio.ui.widgets.drop_zone import DropHint, dataset_folder_for
from lora_studio.ui.widgets.error_dialog import show_error
from lora_studio.ui.widgets.image_grid import GridEntry, ImageGrid, ImageGridModel
from lora_studio.ui.workers import failed_event

KEY_LAST_FOLDER = "dataset/last_folder"
KEY_DEFAULT_CAPTION = "dataset/default_caption"
MEASURE_DELAY_MS = 300  # typing pauses this long before the caption's tokens are counted


class DatasetTab(QWidget):
    """Signals: `report_changed(object)` with the current DatasetReport whenever the dataset or
    a caption changes, None while a folder is being checked (or could not be); `status(str)`
    with a short message for the status bar."""

    report_changed = Signal(object)
    status = Signal(str)

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DatasetTab")
        self._settings = settings
        self._current_row = -1
        self._staying = False  # moving the selection back to an edit that could not be saved
        self._preview_key: tuple | None = None
        self.session = DatasetSession(settings, self)
        self.model = ImageGridModel(self)
        self._measure_timer = QTimer(self, singleShot=True, interval=MEASURE_DELAY_MS)
        self._measure_timer.timeout.connect(self._measure_caption)
        self._build()
        self.trigger_edit.setText(str(settings.value(KEY_DEFAULT_CAPTION, "") or ""))
        self.session.default_caption = self.default_caption
        s = self.session
        s.scan_started.connect(self._on_scan_started)
        s.scanned.connect(self._on_scanned)
        s.scan_failed.connect(self._on_scan_failed)
        s.plan_changed.connect(self._on_plan_changed)
        s.plan_failed.connect(self._on_plan_failed)
        s.caption_measured.connect(self.editor.set_tokens)
        s.thumbnail.connect(self.model.set_thumbnail)
        s.preview_ready.connect(self.model_sees.show_preview)
        s.preview_failed.connect(lambda exc: self.model_sees.show_message(
            failed_event(exc).message))
        self.tools = DatasetTools(self)  # the Doctor tab and the tag tools

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        splitter = self.splitter = QSplitter(Qt.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self._build_grid_side())
        splitter.addWidget(self._build_side_panel())
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([760, 520])
        self.banner = QLabel("")
        self.banner.setObjectName("FirstRunBanner")
        self.banner.setWordWrap(True)
        self.banner.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(10)
        layout.addWidget(self.banner)
        layout.addLayout(self._build_top())
        layout.addWidget(splitter, 1)
        save = QShortcut(QKeySequence.Save, self)
        save.setContext(Qt.WidgetWithChildrenShortcut)
        save.activated.connect(lambda: self.editor.modified and self.save_caption())

    def _build_top(self) -> QHBoxLayout:
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
        return top

    def _build_grid_side(self) -> QWidget:
        """The Folders box above the grid (or the drop hint while no image is there)."""
        self.drop_hint = DropHint()
        self.drop_hint.open_requested.connect(self.open_folder_dialog)
        self.grid = ImageGrid()
        self.grid.setModel(self.model)
        self.grid.selectionModel().currentChanged.connect(self._on_current_changed)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.drop_hint)
        self.stack.addWidget(self.grid)
        folders = self.folders = FoldersBox()
        folders.hide()
        # each edit checks the folders again; the check saves an unsaved caption first
        folders.repeats_changed.connect(self.session.set_repeats)
        folders.caption_changed.connect(self.session.set_folder_caption)
        folders.remove_requested.connect(self.session.remove_folder)
        folders.reset_requested.connect(self.session.reset_folders)
        folders.add_requested.connect(self.add_folder_dialog)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.setSpacing(8)
        left_layout.addWidget(folders)
        left_layout.addWidget(self.stack, 1)
        return left

    def show_banner(self, text: str) -> None:
        """A note above the grid (the first-run tour); "" hides it."""
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def _build_side_panel(self) -> QWidget:
        side = self.side_panel = DatasetSidePanel()
        self.trigger_edit, self.caption_tabs = side.trigger_edit, side.caption_tabs
        self.editor, self.model_sees, self.report_panel = side.editor, side.model_sees, \
            side.report_panel
        self.caption_edit, self.save_button = self.editor.caption_edit, self.editor.save_button
        self.revert_button, self.image_label = self.editor.revert_button, self.editor.image_label
        self.caption_status = self.editor.caption_status
        self.trigger_edit.editingFinished.connect(self._on_default_caption_edited)
        self.save_button.clicked.connect(self.save_caption)
        self.revert_button.clicked.connect(self._show_caption_of_current)
        self.caption_edit.textChanged.connect(self._on_caption_text_changed)
        self.caption_tabs.currentChanged.connect(lambda _i: self._refresh_preview())
        self.report_panel.image_clicked.connect(self.select_row)
        return side

    # ------------------------------------------------------------------ public API
    @property
    def report(self) -> DatasetReport | None:
        return self.session.report

    @property
    def plan(self) -> DatasetPlan | None:
        return self.session.plan

    @property
    def folder(self) -> Path | None:
        return self.session.folder

    @property
    def is_scanning(self) -> bool:
        return self.session.scanning

    @property
    def default_caption(self) -> str:
        return self.trigger_edit.text().strip()

    def set_training_config(self, cfg: TrainConfig) -> None:
        """Plan with `cfg` (resolution, batch size, buckets, caption options; a copy is kept):
        a re-plan of the folder already checked, or a new check if the check itself changes."""
        self.session.set_config(cfg)

    def open_folder_dialog(self) -> None:
        start = str(self.folder or self._settings.value(KEY_LAST_FOLDER, "") or Path.home())
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
        self._settings.setValue(KEY_LAST_FOLDER, str(folder))
        self.folder_label.setText(str(folder))
        self.folder_label.setToolTip(str(folder))
        self.session.open(folder)

    def rescan(self) -> None:
        self._autosave()
        self.session.scan()

    def add_folder_dialog(self) -> None:
        start = str(self.folder or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images", start)
        if folder:
            self.add_folder(Path(folder))

    def add_folder(self, folder: Path) -> None:
        """Train `folder` too: the dataset becomes a list of folders (checked again)."""
        self.session.add_folder(folder)

    def select_row(self, row: int) -> None:
        index = self.model.index(row)
        self.grid.selectionModel().setCurrentIndex(index, QItemSelectionModel.ClearAndSelect)
        self.grid.scrollTo(index)

    def save_caption(self) -> bool:
        """Write the edited caption beside the current image (atomically); True when written.
        An empty caption is written as an empty file: the image trains with no caption."""
        item = self._item()
        if item is None:
            return False
        text = self.editor.text()
        try:
            target = self.session.save_caption(item, text)
        except StudioError as exc:  # a full disk: which one, what is free, what to do
            show_error(self, f"Could not save the caption of {item.image_path.name}. "
                       f"{exc.user_message()}")
            return False  # the edit stays in the editor, unsaved, to save again
        except OSError as exc:
            show_error(self, f"Could not save the caption of {item.image_path.name}: "
                       f"{exc.strerror or exc}", "Check that the folder is writable.")
            return False
        self.model.set_caption(self._current_row, item.caption, True)
        self.editor.mark_saved(f"Saved to {target.name}" if text else
                               f"Saved an empty {target.name}: this image trains with no "
                               "caption")
        self.editor.show_note(item, self.report.subsets[item.subset].caption_extension)
        self._show_report()
        self._refresh_preview()
        self.report_changed.emit(self.report)
        return True

    def refresh_captions(self, images: list[Path]) -> None:
        """Show the captions of `images` again after their files changed (the report was
        updated in place: no new check)."""
        if self.report is None:
            return
        for path in images:
            row = self.model.row_of(path)
            if row >= 0:
                item = self.report.items[row]
                self.model.set_caption(row, item.caption, item.caption_path is not None)
        item = self._item()
        if item is not None and item.image_path in images and not self.editor.modified:
            self._show_caption_of_current()
        self._show_report()
        self._refresh_preview()
        self.report_changed.emit(self.report)

    def shutdown(self) -> None:
        """Save what is unsaved and stop background work before the window goes away."""
        self._autosave()
        self.session.shutdown()
        self.folders.flush()  # a repeats edit still waiting is remembered (no check now)

    # ------------------------------------------------------------------ scan results
    def _on_scan_started(self) -> None:
        self._autosave()
        self.rescan_button.setEnabled(False)
        self.folders.setEnabled(False)
        self.editor.set_busy("Checking the folder…")
        self.model_sees.show_message("Checking the folder…")
        self._preview_key = None
        name = self.folder.name if self.folder else ""
        self.report_panel.show_message(f"Checking {name}…")
        self.status.emit(f"Checking {self.folder}…")
        self.report_changed.emit(None)

    def _on_scanned(self, report: DatasetReport) -> None:
        selected = self._item()
        self._current_row = -1
        self.rescan_button.setEnabled(True)
        self.model.set_entries([GridEntry(item.image_path, item.caption,
                                          item.caption_path is not None)
                                for item in report.items])
        self.stack.setCurrentWidget(self.grid if report.items else self.drop_hint)
        self.folders.set_rows(self.session.folder_rows(), report.layout)
        self.folders.setEnabled(True)
        self.folders.setVisible(bool(report.subsets))
        self._show_caption_of_current()
        self._show_report()
        self.status.emit(f"{report.root.name}: {report.usable} usable, "
                         f"{len(report.skipped)} skipped, {report.images_per_epoch} per epoch")
        self.report_changed.emit(report)
        self.session.load_thumbnails()
        if report.items:
            rows = [i for i, it in enumerate(report.items)
                    if selected is not None and it.image_path == selected.image_path]
            self.select_row(rows[0] if rows else 0)

    def _on_scan_failed(self, exc: BaseException) -> None:
        self._current_row = -1
        self.rescan_button.setEnabled(True)
        self.model.set_entries([])
        listed = self.session.subsets is not None  # a folder list that fails can be reset
        self.folders.set_rows([], "subsets" if listed else "folder")
        self.folders.setEnabled(True)
        self.folders.setVisible(listed)
        self.stack.setCurrentWidget(self.drop_hint)
        self._show_caption_of_current()
        failed = failed_event(exc)
        self.report_panel.show_message(failed.message)
        self.status.emit("The folder could not be checked.")
        self.report_changed.emit(None)
        if not isinstance(exc, StudioError):
            show_error(self, failed.message, failed.details)

    def _on_plan_changed(self, plan: DatasetPlan) -> None:
        self._show_report()
        self._refresh_preview()
        self._measure_caption()

    def _on_plan_failed(self, exc: BaseException) -> None:
        """The training settings cannot plan this folder: the report stays, the error on top."""
        self._show_report()
        self.report_panel.summary.setText(failed_event(exc).message)

    def _show_report(self) -> None:
        self.report_panel.show_report(self.report, self.plan, self.session.captions_checked)

    # ------------------------------------------------------------------ captions
    def _item(self) -> DatasetItem | None:
        report, row = self.report, self._current_row
        return report.items[row] if report is not None and 0 <= row < len(report.items) \
            else None

    def _on_current_changed(self, current, previous) -> None:
        if self._staying:
            return
        if not self._autosave() and previous.isValid():
            # The edit could not be saved (a full disk...): stay on its image, edit kept.
            self._staying = True
            try:
                self.grid.selectionModel().setCurrentIndex(
                    previous, QItemSelectionModel.ClearAndSelect)
            finally:
                self._staying = False
            return
        self._current_row = current.row() if current.isValid() else -1
        self._show_caption_of_current()

    def _autosave(self) -> bool:
        """Unsaved caption edits are saved before anything replaces them (never dropped). Only
        Save writes an unchanged caption (e.g. an explicit empty one for an uncaptioned image).
        False when an edit could not be saved (the error is shown)."""
        return self.save_caption() if self.editor.changed else True

    def _show_caption_of_current(self) -> None:
        item = self._item()
        if item is None:
            self.editor.show_nothing()
        else:
            self.editor.show_item(item, self.report.subsets[item.subset].caption_extension)
            self._measure_caption()
        if self.is_scanning:
            self.editor.set_busy("Checking the folder…")
        self._refresh_preview()

    def _on_caption_text_changed(self) -> None:
        if self.editor.modified:
            self._measure_timer.start()

    def _measure_caption(self) -> None:
        item = self._item()
        text = self.editor.text() if self.editor.modified or item is None else item.caption
        if text:
            self.session.measure(text)
        else:
            self.editor.set_tokens(None)

    def _on_default_caption_edited(self) -> None:
        text = self.default_caption
        self._settings.setValue(KEY_DEFAULT_CAPTION, text)
        if not self.session.apply_default_caption(text):
            return
        for row, item in enumerate(self.report.items):
            if item.caption_path is None:
                self.model.set_caption(row, item.caption, False)
        if not self.editor.modified:
            self._show_caption_of_current()
        self._show_report()
        self.report_changed.emit(self.report)

    # ------------------------------------------------------------------ what the model sees
    def _refresh_preview(self) -> None:
        """Ask for what the model sees of the current image when that tab is shown and the
        image, its caption or the plan changed."""
        if not self.side_panel.showing_model_sees() or self.is_scanning:
            return
        item = self._item()
        key = (id(self.plan), item.image_path if item else None, item.caption if item else None)
        if key == self._preview_key:
            return
        self._preview_key, self._preview_plan = key, self.plan  # (keeps id(plan) unique)
        if item is not None:
            self.model_sees.show_message(f"Reading {item.image_path.name}…")
        self.session.request_preview(item.image_path if item else None)
