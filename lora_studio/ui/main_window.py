"""The studio window: four tabs (Dataset, Train, Mix, Generate), a status bar, one job runner.

Drop a folder (or image files) anywhere on the window to open it in the Dataset tab (on the Mix
tab, LoRA files and folders go to its library; on the Generate tab, a PNG loads its settings).
The base model, shared by every tab, is picked at the top right (`BaseModelChoice`). Window
geometry, the last folder and the current tab are kept in QSettings.
"""

from __future__ import annotations

import re

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QShowEvent
from PySide6.QtWidgets import QMainWindow, QMessageBox, QTabWidget, QWidget

from lora_studio.core import events as ev
from lora_studio.core.models.tiny_shapes.sample_data import SAMPLE_COUNT
from lora_studio.core.paths import sample_dataset_dir, user_data_dir
from lora_studio.ui.base_model import BaseModelChoice
from lora_studio.ui.lora_library import LoraLibrary
from lora_studio.ui.session_model import SessionModel
from lora_studio.ui.settings import APP_NAME, studio_settings
from lora_studio.ui.tabs.dataset_tab import DatasetTab
from lora_studio.ui.tabs.generate_tab import GenerateTab
from lora_studio.ui.tabs.mix_tab import MixTab
from lora_studio.ui.tabs.train_tab import TrainTab
from lora_studio.ui.widgets.base_model_picker import BaseModelPicker
from lora_studio.ui.widgets.drop_zone import dataset_folder_for, local_paths
from lora_studio.ui.widgets.error_dialog import show_error
from lora_studio.ui.widgets.status_bar import StudioStatusBar
from lora_studio.ui.workers import JobRunner, device_probe, prefetch_base_model

TAB_NAMES = ("Dataset", "Train", "Mix", "Generate")
FIRST_RUN_TOUR = (
    f"<b>Welcome.</b> This is the sample dataset: {SAMPLE_COUNT} pictures of a “zqstar” star, "
    "a shape the "
    "built-in <b>Tiny Shapes</b> model has never seen. Tiny Shapes is a toy: it only draws "
    "simple colored shapes on plain backgrounds, 64×64 — made for learning the workflow (and "
    "for our tests), on any CPU. Press <b>Start training</b> on the Train tab (a few minutes), "
    "then try “zqstar, a large red star on a white background” on the Generate tab. For real "
    "work pick an SD 1.5 / SDXL checkpoint at the top right, and drop your own folder here.")
KEY_GEOMETRY = "window/geometry"
KEY_TAB = "window/tab"


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, *, restore_dataset: bool = True,
                 probe_device: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else studio_settings()
        self.runner = JobRunner(self)
        self._probe_device = probe_device
        self._prefetching = False  # tokenizers of the base model loaded ahead (after showing)

        self.base_model = BaseModelChoice(self.settings, parent=self)
        self.session_model = SessionModel(self.runner, self.base_model.spec, parent=self)
        self.library = LoraLibrary(self.settings, default_folders=[user_data_dir() / "loras"],
                                   parent=self)
        self.dataset_tab = DatasetTab(self.settings)
        self.train_tab = TrainTab(self.runner, self.settings)
        self.mix_tab = MixTab(self.session_model, self.library, self.settings)
        self.generate_tab = GenerateTab(self.session_model, self.settings)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("MainTabs")
        self.tabs.setDocumentMode(True)
        self.tabs.tabBar().setDrawBase(False)
        for tab, name in zip((self.dataset_tab, self.train_tab, self.mix_tab,
                              self.generate_tab), TAB_NAMES):
            self.tabs.addTab(tab, name)
        self.model_picker = BaseModelPicker(self.base_model)
        self.tabs.setCornerWidget(self.model_picker, Qt.TopRightCorner)
        self.setCentralWidget(self.tabs)

        self.status = StudioStatusBar()
        self.setStatusBar(self.status)

        self.dataset_tab.status.connect(lambda text: self.status.showMessage(text, 8000))
        self.dataset_tab.report_changed.connect(self.train_tab.set_report)
        self.dataset_tab.report_changed.connect(self._hide_tour_for_other_folders)
        # the Dataset tab plans with the Train tab's settings (buckets, batch size, tokens)
        self.train_tab.form.setting_changed.connect(self._plan_dataset_with_train_settings)
        self._plan_dataset_with_train_settings()
        self.base_model.changed.connect(self._on_base_model)
        self.base_model.described.connect(self._on_described)
        self.train_tab.base_model_requested.connect(self.model_picker.choose)
        self.train_tab.lora_trained.connect(self._on_lora_trained)
        self.train_tab.compare_requested.connect(self.show_run_grid)
        self.train_tab.compare_best_requested.connect(self.show_run_grid)
        self._on_base_model(self.base_model.spec)
        self.base_model.describe()
        self.runner.started.connect(lambda name: self.status.set_job(f"{name.capitalize()}: "
                                                                     "starting"))
        self.runner.event.connect(self._on_job_event)
        self.runner.refused.connect(lambda text: show_error(self, text, title="Busy"))

        self._restore(restore_dataset)

    # ------------------------------------------------------------------ settings
    def _restore(self, restore_dataset: bool) -> None:
        geometry = self.settings.value(KEY_GEOMETRY)
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1180, 760)
        tab = _int(self.settings.value(KEY_TAB, 0))
        self.tabs.setCurrentIndex(tab if 0 <= tab < self.tabs.count() else 0)
        self.tabs.currentChanged.connect(lambda i: self.settings.setValue(KEY_TAB, i))
        if restore_dataset:
            last = self.settings.value("dataset/last_folder", "")
            folder = first_dataset_folder(last)
            if folder is not None:
                self.dataset_tab.load_folder(folder)
            if not last and folder is not None:
                self.dataset_tab.show_banner(FIRST_RUN_TOUR)

    def save_settings(self) -> None:
        self.settings.setValue(KEY_GEOMETRY, self.saveGeometry())
        self.settings.setValue(KEY_TAB, self.tabs.currentIndex())
        self.mix_tab.flush_settings()  # a stack change still in its debounce
        self.settings.sync()

    # ------------------------------------------------------------------ device
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's API
        super().showEvent(event)
        if self._probe_device:
            self._probe_device = False
            # After the first paint: torch is imported in a background thread.
            QTimer.singleShot(0, self._start_device_probe)

    def _start_device_probe(self) -> None:
        self._prefetching = True  # from now on, each base model chosen is prefetched
        prefetch_base_model(self.base_model.spec)
        probe = device_probe()
        if probe.text is not None:
            self._on_device(probe.text)
            return
        probe.ready.connect(self._on_device)
        probe.start()

    def _on_device(self, text: str) -> None:
        self.status.set_device(text)
        self.train_tab.form.set_cuda(text.startswith("CUDA"))
        found = re.search(r"(\d+(?:\.\d+)?) GB", text) if text.startswith("CUDA") else None
        self.train_tab.memory_view.set_vram_gb(float(found.group(1)) if found else None)

    # ------------------------------------------------------------------ jobs
    def _on_job_event(self, event: ev.Event) -> None:
        self.status.show_job_event(self.runner.job_name or "job", event)

    def _on_base_model(self, spec) -> None:
        if self._prefetching:
            prefetch_base_model(spec)
        """Every tab follows the picked base model."""
        self.train_tab.set_base_model(spec, self.base_model.label)
        self.session_model.set_base_model(spec)
        self._show_base_model()

    def _on_described(self, _text: str, _ok: bool) -> None:
        """The architecture is known: the Train tab's defaults follow it."""
        choice = self.base_model
        self.train_tab.set_base_model(choice.spec, choice.label, choice.arch)
        self._show_base_model()

    def _show_base_model(self) -> None:
        choice = self.base_model
        suffix = ""
        if choice.description:  # "" while the architecture is being read
            suffix = f" ({choice.description})" if choice.ok else " (cannot be used)"
        self.status.set_base_model(choice.label + suffix)

    def _hide_tour_for_other_folders(self, _report) -> None:
        """The tour is about the sample dataset: it goes when another folder is opened (not
        while the sample is checked again, when the report is None for a moment)."""
        sample = first_dataset_folder("")
        folder = self.dataset_tab.folder
        if folder is None or sample is None or folder.resolve() != sample.resolve():
            self.dataset_tab.show_banner("")

    def _plan_dataset_with_train_settings(self, _key: str = "*") -> None:
        self.dataset_tab.set_training_config(self.train_tab.form.to_config(strict=False))

    def _on_lora_trained(self, path) -> None:
        """A finished run's LoRA goes into the Mix tab's library (read again if overwritten)."""
        self.library.refresh_file(path)
        self.status.showMessage(f"Trained {path.name}: it is in the Mix tab's library.", 10000)

    def show_run_grid(self, folder, best_step: int | None = None) -> None:
        """The Mix tab's grid over the steps a training run saved in `folder`."""
        self.mix_tab.show_run_grid(folder, best_step)
        self.tabs.setCurrentWidget(self.mix_tab)

    # ------------------------------------------------------------------ drag and drop
    def _drop_for_generate(self, paths: list) -> bool:
        """While the Generate tab is shown, a dropped image (no folder) loads its settings."""
        return (self.tabs.currentWidget() is self.generate_tab
                and self.generate_tab.accepts_drop(paths))

    def _drop_for_mix(self, paths: list) -> bool:
        """While the Mix tab is shown, LoRA files and folders go to its library."""
        return self.tabs.currentWidget() is self.mix_tab and self.mix_tab.accepts_drop(paths)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's API
        paths = local_paths(event.mimeData())
        if self._drop_for_generate(paths) or self._drop_for_mix(paths):
            event.acceptProposedAction()
        elif dataset_folder_for(paths) is not None:
            event.acceptProposedAction()
            self.dataset_tab.drop_hint.set_highlight(True)
        else:
            event.ignore()

    def dragLeaveEvent(self, event) -> None:  # noqa: N802 - Qt's API
        self.dataset_tab.drop_hint.set_highlight(False)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's API
        self.dataset_tab.drop_hint.set_highlight(False)
        paths = local_paths(event.mimeData())
        if self._drop_for_generate(paths):
            self.generate_tab.drop_paths(paths)
            event.acceptProposedAction()
        elif self._drop_for_mix(paths):
            self.mix_tab.drop_paths(paths)
            event.acceptProposedAction()
        elif self.open_paths(paths):
            event.acceptProposedAction()
        else:
            event.ignore()

    def open_paths(self, paths: list) -> bool:
        """What a drop does: open the folder in the Dataset tab and show that tab."""
        if not self.dataset_tab.load_paths(paths):
            return False
        self.tabs.setCurrentWidget(self.dataset_tab)
        return True

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's API
        if self.runner.is_running and not self._stop_and_quit_confirmed():
            event.ignore()
            return
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)

    def _stop_and_quit_confirmed(self) -> bool:
        """Ask whether to stop the running job and quit, saying what stopping keeps."""
        keeps = self.runner.what_stopping_keeps()
        queue = self.train_tab.queue
        if queue.running and queue.waiting:
            keeps += (f" The {queue.waiting} queued run(s) still waiting stay in the queue for "
                      "next time.")
        box = QMessageBox(QMessageBox.Question, "A job is running",
                          f"{self.runner.job_name.capitalize()} is still running.", parent=self)
        box.setInformativeText(keeps)
        stop = box.addButton("Stop and quit", QMessageBox.AcceptRole)
        box.setDefaultButton(box.addButton("Keep running", QMessageBox.RejectRole))
        box.exec()
        return box.clickedButton() is stop

    def shutdown(self) -> None:
        """Stop the background work (live preview, thumbnails, LoRA inspection, exports) and
        wait for a job still running, so no thread outlives the window."""
        self.mix_tab.shutdown()
        self.train_tab.memory.shutdown()
        self.train_tab.queue.stop()  # the queue's next run must not start as this one ends
        if self.runner.is_running:
            self.status.set_job(f"Stopping {self.runner.job_name}…")
        # No time limit: a cancel lands at the job's next check (a step, a cache batch, the
        # end of a model load), and a QThread destroyed while running would abort the process.
        self.runner.stop(timeout_ms=-1)
        self.dataset_tab.shutdown()
        self.library.shutdown()
        self.base_model.shutdown()


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def first_dataset_folder(last_folder: object):
    """The folder to open at start: the last one used, else (first run) the shipped sample
    dataset, so a new user can press Start on the Train tab right away."""
    from pathlib import Path

    if last_folder:
        folder = Path(str(last_folder))
        return folder if folder.is_dir() else None
    sample = sample_dataset_dir()
    return sample if sample.is_dir() else None
