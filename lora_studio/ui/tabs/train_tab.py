"""Train tab: the few settings that matter, Start / Cancel, and the run as it happens (progress,
loss curve, preview images, log).

The training job is `lora_studio.core.train.trainer.run_training_job`, imported inside the job,
i.e. in the worker thread (it imports torch). The tab steers it only through the JobRunner.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from PIL.ImageQt import ImageQt
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core import events as ev
from lora_studio.core.dataset import DatasetReport
from lora_studio.core.errors import StudioError
from lora_studio.core.paths import user_data_dir
from lora_studio.core.train.config import TrainConfig
from lora_studio.ui.widgets.error_dialog import show_error
from lora_studio.ui.widgets.loss_plot import LossPlot
from lora_studio.ui.workers import Job, JobRunner

JOB_NAME = "training"
TINY_MODEL_LABEL = "Built-in tiny model"


def training_job(config: TrainConfig) -> Job:
    """The job the runner runs: the core trainer, imported in the worker thread."""

    def job(emit: ev.Emit, control) -> ev.Event:
        from lora_studio.core.train.trainer import run_training_job

        return run_training_job(config, emit, control)

    return job


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainTab(QWidget):
    """Signals: `base_model_changed(str)` (a label for the status bar)."""

    base_model_changed = Signal(str)

    def __init__(self, runner: JobRunner, settings: QSettings,
                 job_factory: Callable[[TrainConfig], Job] = training_job,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TrainTab")
        self._runner = runner
        self._settings = settings
        self._job_factory = job_factory
        self._report: DatasetReport | None = None
        self._ours = False  # the running job is this tab's
        self._build()
        runner.event.connect(self._on_event)
        runner.finished.connect(self._on_finished)
        runner.started.connect(lambda name: self._update_buttons())
        self._update_buttons()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        defaults = TrainConfig()
        self.dataset_label = QLabel("Open a dataset in the Dataset tab first.")
        self.dataset_label.setWordWrap(True)
        self.base_edit = QLineEdit(str(self._settings.value("train/base_model", "") or ""))
        self.base_edit.setPlaceholderText(TINY_MODEL_LABEL)
        self.base_edit.setToolTip("A diffusers folder or a .safetensors checkpoint; empty = the "
                                  "built-in tiny model (for trying the app out).")
        self.base_edit.editingFinished.connect(self._on_base_edited)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_base)
        base_row = QHBoxLayout()
        base_row.addWidget(self.base_edit, 1)
        base_row.addWidget(browse)

        self.steps_spin = _spin(1, 1_000_000, defaults.train.steps)
        self.rank_spin = _spin(1, 256, defaults.lora.rank)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(0.000001, 1.0)
        self.lr_spin.setSingleStep(0.00005)
        self.lr_spin.setValue(defaults.train.learning_rate)
        self.lr_spin.setAlignment(Qt.AlignRight)
        self.resolution_spin = _spin(64, 2048, defaults.dataset.resolution, step=64)
        self.preview_spin = _spin(0, 100_000, 0)
        self.preview_spin.setSpecialValueText("off")
        self.name_edit = QLineEdit(str(self._settings.value("train/name", "my_lora") or "my_lora"))

        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignRight)
        form.addRow("Dataset", self.dataset_label)
        form.addRow("Base model", base_row)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Rank", self.rank_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Resolution", self.resolution_spin)
        form.addRow("Preview every", self.preview_spin)
        form.addRow("LoRA name", self.name_edit)
        settings_box = QGroupBox("Settings")
        settings_box.setLayout(form)

        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("PrimaryButton")
        self.start_button.clicked.connect(self.start_training)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._runner.cancel)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.start_button)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(settings_box)
        left_layout.addLayout(buttons)
        left_layout.addStretch(1)

        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.progress.setValue(0)
        self.stats_label = QLabel("Not started.")
        self.stats_label.setObjectName("HintLabel")
        self.loss_plot = LossPlot()
        self.preview_label = QLabel("Previews appear here when “Preview every” is set.")
        self.preview_label.setObjectName("PreviewLabel")
        self.preview_label.setAlignment(Qt.AlignCenter)
        self.preview_label.setMinimumSize(180, 180)
        self.preview_label.setWordWrap(True)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("Log")
        lower = QHBoxLayout()
        lower.addWidget(self.preview_label, 0)
        lower.addWidget(self.log_view, 1)
        run_box = QGroupBox("Run")
        run_layout = QVBoxLayout(run_box)
        run_layout.addWidget(self.progress)
        run_layout.addWidget(self.stats_label)
        run_layout.addWidget(self.loss_plot, 2)
        run_layout.addLayout(lower, 1)

        splitter = QSplitter(Qt.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(left)
        splitter.addWidget(run_box)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([400, 640])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(splitter)

    # ------------------------------------------------------------------ public API
    def set_report(self, report: DatasetReport | None) -> None:
        self._report = report
        if report is None:
            self.dataset_label.setText("Open a dataset in the Dataset tab first.")
        else:
            trigger = f" · trigger “{report.default_caption}”" if report.default_caption else ""
            self.dataset_label.setText(f"{report.root.name}: {report.usable} images{trigger}")
            self.dataset_label.setToolTip(str(report.root))
        self._update_buttons()

    def base_model_label(self) -> str:
        base = self.base_edit.text().strip()
        return Path(base).name if base and base != "tiny" else TINY_MODEL_LABEL

    def build_config(self) -> TrainConfig:
        """The TrainConfig the form describes (validated; ConfigError names a bad key)."""
        cfg = TrainConfig()
        if self._report is not None:
            cfg.dataset.path = str(self._report.root)
            cfg.dataset.default_caption = self._report.default_caption
            cfg.dataset.trigger_word = self._report.default_caption
        cfg.model.base = self.base_edit.text().strip()
        cfg.train.steps = self.steps_spin.value()
        cfg.lora.rank = self.rank_spin.value()
        cfg.lora.alpha = float(self.rank_spin.value())
        cfg.train.learning_rate = self.lr_spin.value()
        cfg.dataset.resolution = self.resolution_spin.value()
        cfg.sample.every = self.preview_spin.value()
        if cfg.sample.every and cfg.dataset.default_caption:
            cfg.sample.prompts = [cfg.dataset.default_caption]
        name = self.name_edit.text().strip() or "my_lora"
        cfg.output.name = name
        cfg.output.path = str(user_data_dir() / "loras" / name)
        return cfg.validate()

    def start_training(self) -> bool:
        try:
            config = self.build_config()
        except StudioError as exc:
            show_error(self, exc.user_message(), title="Cannot start training")
            return False
        self._settings.setValue("train/name", config.output.name)
        self.loss_plot.clear_points()
        self.log_view.clear()
        self.progress.setRange(0, config.train.steps)
        self.progress.setValue(0)
        self.stats_label.setText("Starting: loading the base model…")
        self._ours = self._runner.start(self._job_factory(config), JOB_NAME)
        self._update_buttons()
        return self._ours

    # ------------------------------------------------------------------ events
    def _on_event(self, event: ev.Event) -> None:
        if not self._ours:
            return
        if isinstance(event, ev.JobStarted):
            self.progress.setRange(0, max(1, event.total_steps))
            self._log(event.message or f"Started: {event.total_steps} steps")
        elif isinstance(event, ev.StepProgress):
            self.progress.setRange(0, max(1, event.total_steps))
            self.progress.setValue(event.step)
            self.loss_plot.add(event.step, event.loss)
            self.stats_label.setText(f"step {event.step}/{event.total_steps} · loss "
                                     f"{event.loss:.4f} · {event.it_per_s:.2f} it/s · "
                                     f"ETA {format_eta(event.eta_s)}")
        elif isinstance(event, ev.Preview):
            pixmap = QPixmap.fromImage(ImageQt(event.image.convert("RGBA")))
            self.preview_label.setPixmap(pixmap.scaled(180, 180, Qt.KeepAspectRatio,
                                                       Qt.SmoothTransformation))
            self.preview_label.setToolTip(f"step {event.step}: {event.prompt}")
        elif isinstance(event, ev.Log):
            self._log(event.message if event.level == "info" else f"⚠ {event.message}")
        elif isinstance(event, (ev.LoraSaved, ev.CheckpointSaved)):
            self._log(f"Saved {event.path}")
        elif isinstance(event, (ev.Finished, ev.Cancelled)):
            self._log(event.message or type(event).__name__)
            self.stats_label.setText(event.message or type(event).__name__)
        elif isinstance(event, ev.Failed):
            self._log(f"Failed: {event.message}")
            self.stats_label.setText("Training failed.")
            show_error(self, event.message, event.details, title="Training failed")

    def _on_finished(self, terminal: ev.Event) -> None:
        self._ours = False
        self._update_buttons()

    def _log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def _update_buttons(self) -> None:
        running = self._runner.is_running
        self.start_button.setEnabled(not running and self._report is not None
                                     and self._report.usable > 0)
        self.cancel_button.setEnabled(running and self._ours)

    def _on_base_edited(self) -> None:
        self._settings.setValue("train/base_model", self.base_edit.text().strip())
        self.base_model_changed.emit(self.base_model_label())

    def _browse_base(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a base model checkpoint", "",
                                              "Checkpoints (*.safetensors);;All files (*)")
        if path:
            self.base_edit.setText(path)
            self._on_base_edited()


def _spin(low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    spin.setAlignment(Qt.AlignRight)
    return spin
