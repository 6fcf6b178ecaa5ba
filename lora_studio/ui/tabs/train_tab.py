"""Train tab: the settings form (with TOML presets), Start, the run's controls (Pause / Resume,
Sample now, Save now, Cancel) and the run as it happens: step / total, loss (raw + smoothed
curve), learning rate, it/s, ETA, every preview image (broken-looking ones flagged), a log, and
the saved LoRA.

The training job is `lora_studio.core.train.trainer.run_training_job`, imported inside the job,
i.e. in the worker thread (it imports torch). The run itself — its state, step, losses, previews,
saved files, how it ended — lives in the view-model `TrainRun` (`ui/train_run.py`, `tab.run`),
which reads the job only through the events the JobRunner carries and steers it only through the
runner's JobControl; the tab and its `TrainRunView` only bind to it. The loss curve redraws on a
timer (`LossPlot`), never once per event, so a fast run cannot flood the GUI thread.

The base model is the window's shared choice (`set_base_model(spec, label, arch)`): the
settings the person has not changed follow its architecture (`core/train/presets.py`); a loaded
preset that names one asks for it with `base_model_requested`.

The dataset is the Dataset tab's report (`set_report`): one folder, a kohya folder, or several
folders with their own repeats (`layout == "subsets"`, trained as `[[dataset.subsets]]`). Above
the Start button, the plan of that dataset with the current settings (its buckets and the epoch
arithmetic, `core/dataset/plan.py`) follows every setting it depends on.

Beside the run, History lists the runs the studio started (their curves, previews and log;
Resume goes on from a cancelled or killed run's newest checkpoint) and Queue holds runs waiting
their turn (saved in the user data folder; "Run queue" trains them one after another). Both start
through `start_config`, the path the Start button takes.

Signals:
  base_model_requested(str)  a preset named this base model (the window's picker switches to it)
  lora_trained(Path)         a run finished; the argument is the saved LoRA file (for the Mix tab)
  compare_requested(Path)    "Compare checkpoints…": the run's output folder (the Mix tab's grid)
  compare_best_requested(Path, int)  the same from the overfitting banner, with the best step
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from collections.abc import Callable

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core import events as ev
from lora_studio.core.dataset import DatasetReport
from lora_studio.core.errors import ConfigError, StudioError
from lora_studio.core.train.config import TrainConfig, config_from_dict, save_config
from lora_studio.core.train.presets import TINY, read_preset, validate_settings
from lora_studio.core.train.runs import resume_request
from lora_studio.ui.base_model import normal_spec
from lora_studio.ui.run_queue_model import QueueModel
from lora_studio.ui.train_run import JOB_NAME, TrainRun
from lora_studio.ui.widgets.error_dialog import show_error
from lora_studio.ui.widgets.run_history import RunHistory
from lora_studio.ui.widgets.run_queue_panel import RunQueuePanel
from lora_studio.ui.widgets.presets_button import PresetsButton
from lora_studio.ui.widgets.plan_view import PLAN_KEYS, PlanView, dataset_summary, subset_tables
from lora_studio.ui.memory_model import MemoryEstimateModel
from lora_studio.ui.widgets.memory_estimate import MemoryEstimateView
from lora_studio.ui.widgets.train_advice import TrainAdvicePanel
from lora_studio.ui.widgets.train_form import TrainForm
from lora_studio.ui.widgets.train_run_view import RunControls, TrainRunView, format_eta
from lora_studio.ui.workers import Job, JobRunner

KEY_NAME = "train/name"
KEY_LAST_CONFIG = "train/last_config"  # the TOML of the last run started (without its dataset)
KEY_LAST_ARCH = "train/last_arch"  # the architecture whose defaults that config started from
KEY_LAST_EDITED = "train/last_edited"  # the keys of it the person had changed

__all__ = ["JOB_NAME", "TrainTab", "training_job", "format_eta", "read_preset"]


def training_job(config: TrainConfig, checkpoint: Path | None = None) -> Job:
    """The job the runner runs: the core trainer, imported in the worker thread (going on from
    `checkpoint` when one is given, as `lora-studio train CONFIG --resume CHECKPOINT` does)."""

    def job(emit: ev.Emit, control) -> ev.Event:
        from lora_studio.core.warmup import import_engine

        import_engine()  # waits for the app's warm-up rather than importing beside it
        from lora_studio.core.train.trainer import run_training_job

        return run_training_job(config, emit, control, resume_from=checkpoint)

    return job


class TrainTab(QWidget):
    base_model_requested = Signal(str)
    lora_trained = Signal(Path)
    compare_requested = Signal(Path)
    compare_best_requested = Signal(Path, int)  # the run folder, its best validation step

    def __init__(self, runner: JobRunner, settings: QSettings,
                 job_factory: Callable[[TrainConfig], Job] = training_job,
                 parent: QWidget | None = None,
                 resume_job_factory: Callable[[TrainConfig, Path], Job] = training_job) -> None:
        super().__init__(parent)
        self.setObjectName("TrainTab")
        self._runner = runner
        self._settings = settings
        self._job_factory = job_factory
        self._resume_job_factory = resume_job_factory
        self._report: DatasetReport | None = None
        self.plan = None  # the DatasetPlan shown above the Start button (None: no dataset)
        self.run = TrainRun(runner, self)  # the run of this tab: its state and commands
        self._build()
        self._restore_settings()
        self.form.setting_changed.connect(self._on_setting_changed)
        self._show_planned_steps(self.form.steps_spin.value())
        self.run.changed.connect(self._on_run_changed)
        self.run.ended.connect(self._on_run_ended)
        self.run.ended.connect(lambda terminal: self.history.refresh())
        runner.started.connect(lambda name: self._update_buttons())
        runner.finished.connect(lambda terminal: self._update_buttons())
        self._update_buttons()

    # The run's state (owned by `self.run`), by the names the window and screenshots use.
    last_config = property(lambda self: self.run.config, doc="The last run's TrainConfig.")
    last_terminal = property(lambda self: self.run.terminal, doc="How the last run ended.")
    trained_lora = property(lambda self: self.run.trained_lora,
                            doc="The LoRA file the last finished run saved.")

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's API
        super().showEvent(event)
        self.memory.flush()  # an estimate asked for while the tab was hidden

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.form = TrainForm()
        self.dataset_label = self.form.dataset_label
        form_holder = QWidget()
        holder_layout = QVBoxLayout(form_holder)
        holder_layout.setContentsMargins(0, 0, 6, 0)
        holder_layout.addWidget(self.form)
        self.advice_panel = TrainAdvicePanel()  # rank and steps for this dataset, one click
        self.advice_panel.apply_requested.connect(self.form.apply_values)
        holder_layout.addWidget(self.advice_panel)
        holder_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(form_holder)
        self.form_scroll = scroll

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(scroll, 1)
        self.plan_view = PlanView()
        self.plan_view.planned.connect(self._on_planned)
        left_layout.addWidget(self.plan_view)
        self.memory_view = MemoryEstimateView()  # the run's peak GPU memory, estimated
        self.memory = MemoryEstimateModel(self.memory_view, self)
        left_layout.addWidget(self.memory_view)
        left_layout.addLayout(self._build_buttons())

        splitter = QSplitter(Qt.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(left)
        self.run_view = TrainRunView()
        self.run_view.bind(self.run)
        view = self.run_view  # its parts, by the names tests and the screenshot use
        self.progress, self.loss_plot, self.preview_strip = (view.progress, view.loss_plot,
                                                             view.preview_strip)
        self.step_label, self.stats_label, self.log_view = (view.step_label, view.stats_label,
                                                            view.log_view)
        self.loss_label, self.lr_label, self.speed_label, self.eta_label = (
            view.loss_label, view.lr_label, view.speed_label, view.eta_label)
        self.result_label = view.result_label
        view.compare_button.clicked.connect(
            lambda: view.result_path and self.compare_requested.emit(view.result_path.parent))
        view.compare_requested_at.connect(  # the overfitting banner: the saved steps, the best
            lambda step: self.run.run_folder
            and self.compare_best_requested.emit(self.run.run_folder, step))
        splitter.addWidget(self._build_side(view))
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([560, 720])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(splitter)

    def _build_side(self, run_view: QWidget) -> QTabWidget:
        """The run, the History of runs and the Queue, as tabs beside the form."""
        self.history = RunHistory()
        self.history.resume_requested.connect(self.resume_run)
        self.history.refresh()
        self.queue = QueueModel(self._runner, lambda config: self.start_config(
            config, self._job_factory(config)), parent=self)
        self.queue_panel = RunQueuePanel(self.queue, self._config_or_error)
        self.side_tabs = tabs = QTabWidget()
        tabs.setDocumentMode(True)
        tabs.setTabPosition(QTabWidget.West)  # beside the run: the 800x600 screen keeps fitting
        for widget, name in ((run_view, "Run"), (self.history, "History"),
                             (self.queue_panel, "Queue")):
            tabs.addTab(widget, name)
        self.run.reset.connect(lambda config: tabs.setCurrentWidget(run_view))
        return tabs

    def _build_buttons(self) -> QVBoxLayout:
        """The run's controls; Presets (load / save) and Start."""
        self.presets_button = PresetsButton(
            self.load_preset, self.save_preset, lambda: self.form.name_edit.text().strip(),
            lambda text: self.run_view.log(text), self._show_config_error)
        self.load_preset_action = self.presets_button.load_action
        self.save_preset_action = self.presets_button.save_action
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("PrimaryButton")
        self.start_button.clicked.connect(self.start_training)
        self.run_controls = controls = RunControls()  # Sample now, Save now, Pause, Cancel
        controls.bind(self.run)
        self.sample_button, self.save_button, self.pause_button, self.cancel_button = (
            controls.sample_button, controls.save_button, controls.pause_button,
            controls.cancel_button)
        start_row = QHBoxLayout()  # the run's controls above Start: the column stays narrow
        start_row.addWidget(self.presets_button)
        start_row.addStretch(1)
        start_row.addWidget(self.start_button)
        buttons = QVBoxLayout()
        buttons.addWidget(controls, 0, Qt.AlignRight)
        buttons.addLayout(start_row)
        return buttons

    def _restore_settings(self) -> None:
        text = str(self._settings.value(KEY_LAST_CONFIG, "") or "")
        if text:
            try:
                cfg = config_from_dict(tomllib.loads(text), validate=False)
                cfg.dataset.path, cfg.dataset.subsets = "", []
                validate_settings(cfg)
                arch, edited = self._last_defaults()
                self.form.set_config(cfg, arch=arch, edited=edited)
            except (tomllib.TOMLDecodeError, StudioError, ValueError):
                pass  # settings from another version: start from the defaults
        name = str(self._settings.value(KEY_NAME, "") or "")
        if name:
            self.form.name_edit.setText(name)

    # ------------------------------------------------------------------ public API
    def set_report(self, report: DatasetReport | None) -> None:
        """The dataset the Dataset tab opened (None: closed). Its layout decides what trains:
        the folder `report.root` ("folder", "kohya"), or its `subsets` ("subsets")."""
        self._report = report
        if report is None:
            self.form.set_dataset(None)
        else:
            first = report.items[0].caption if report.items else ""
            subsets = subset_tables(report, self.form.to_config(strict=False))
            self.form.set_dataset(report.root, report.default_caption,
                                  summary=dataset_summary(report),
                                  first_caption=first.split(",")[0].strip(), subsets=subsets)
        self._update_buttons()  # the form's setting_changed("dataset.path") re-plans

    def set_dataset(self, path: str | Path | None, default_caption: str = "") -> None:
        """Train on the folder `path` (without a scan report: the trainer checks the images)."""
        self._report = None
        self.form.set_dataset(path, default_caption)
        self._update_buttons()

    def set_base_model(self, spec: str | None, label: str, arch: str | None = None) -> None:
        """Train on `spec` (the window's base model; None = the built-in tiny model) of the
        architecture `arch` ("sd1", "sd2", "sd2-v", "sdxl"; None while it is not known): the
        settings the person has not changed take that architecture's defaults."""
        self.form.set_base_model(spec, label, arch)

    def build_config(self) -> TrainConfig:
        """The validated TrainConfig the form describes; ConfigError names a bad key."""
        cfg = self.form.to_config()
        folders = [("dataset.path", cfg.dataset.path)] if not cfg.dataset.subsets else [
            (f"dataset.subsets[{i}].path", t["path"]) for i, t in
            enumerate(cfg.dataset.subsets, start=1)]
        if not cfg.dataset.path and not cfg.dataset.subsets:
            raise ConfigError("dataset.path", "no dataset is open",
                              "Open a folder of images in the Dataset tab first.")
        for key, folder in folders:
            if not Path(folder).is_dir():
                raise ConfigError(key, f"the folder {folder} does not exist",
                                  "It may have been moved or deleted: open the dataset again "
                                  "in the Dataset tab.")
        if cfg.sample.every and not cfg.sample.prompts:
            raise ConfigError("sample.prompts", "is empty but previews are on",
                              "Write a prompt (e.g. the trigger word), or set “Preview every” "
                              "to off.")
        return cfg.validate()

    def start_training(self) -> bool:
        """Start a run with the form's settings; a bad setting opens a message naming it."""
        try:
            config = self.build_config()
        except ConfigError as exc:
            self._show_config_error(exc, "Cannot start training")
            return False
        if self.run.can_start:
            self._remember(config)
        return self.start_config(config, self._job_factory(config))

    def start_config(self, config: TrainConfig, job: Job) -> bool:
        """Run `job`, the training of `config` (Start, Resume and the queue all start here).
        False when another job runs (the runner says which: its `refused`)."""
        started = self.run.start(config, job)
        if started:
            self.run_view.log(f"Output folder: {config.output_dir}")
        return started

    def resume_run(self, folder: str | Path) -> bool:
        """Go on from the newest checkpoint of the run in `folder` (`lora-studio train CONFIG
        --resume CHECKPOINT`); a run that cannot resume opens a message saying why."""
        try:
            config, checkpoint = resume_request(folder)
        except StudioError as exc:
            show_error(self, exc.user_message(), title="Cannot resume the run")
            return False
        started = self.start_config(config, self._resume_job_factory(config, checkpoint))
        if started:
            self.run_view.log(f"Resuming from {checkpoint}")
        return started

    def cancel_training(self) -> None:
        """Stop the run after its current step (a paused one too); the LoRA trained so far is
        saved."""
        self.run.cancel()

    def save_preset(self, path: str | Path) -> Path:
        """Write the form's settings (and dataset, when one is open) as a TOML preset."""
        cfg = self.form.to_config()
        validate_settings(cfg)
        return save_config(cfg, path)

    def load_preset(self, path: str | Path) -> TrainConfig:
        """Show the settings of a TOML preset. The dataset open in the Dataset tab stays; a
        preset's dataset is used only when none is open."""
        cfg = read_preset(path)
        if self.form.dataset_path:
            cfg.dataset.path, cfg.dataset.subsets = "", []  # the form keeps its dataset
        base = cfg.model.base
        self.form.set_config(cfg)
        self._update_buttons()
        if normal_spec(base) is not None:  # a preset for the built-in model changes nothing
            self.base_model_requested.emit(base)
        return cfg

    # ------------------------------------------------------------------ the run
    def _on_run_changed(self) -> None:
        self.form.set_editable(not self.run.is_active)  # settings locked while a run uses them
        self._update_buttons()

    def _on_run_ended(self, terminal: ev.Event) -> None:
        if isinstance(terminal, ev.Finished):
            if self.run.trained_lora is not None:
                self.lora_trained.emit(self.run.trained_lora)
        elif isinstance(terminal, ev.Failed):
            show_error(self, terminal.message, terminal.details, title="Training failed")

    # ------------------------------------------------------------------ helpers
    def _show_config_error(self, exc: ConfigError, title: str) -> None:
        label = self.form.label_for(exc.key)
        lead = f"Check the setting “{label}”.\n\n" if label else ""
        show_error(self, lead + exc.user_message(), title=title)
        self.form.focus_field(exc.key)

    def _config_or_error(self) -> TrainConfig | None:
        """The form's validated config, or None after a message naming the bad setting."""
        try:
            return self.build_config()
        except ConfigError as exc:
            self._show_config_error(exc, "Cannot queue this run")
            return None

    def _remember(self, config: TrainConfig) -> None:
        from lora_studio.core.train.config import config_to_toml

        self._settings.setValue(KEY_NAME, config.output.name)
        saved = copy.deepcopy(config)
        saved.dataset.path, saved.dataset.subsets = "", []
        if not self.form.output_edit.text().strip():
            saved.output.path = ""  # an automatic output folder stays automatic
        self._settings.setValue(KEY_LAST_CONFIG, config_to_toml(saved))
        self._settings.setValue(KEY_LAST_ARCH, self.form.arch)
        self._settings.setValue(KEY_LAST_EDITED, sorted(self.form.edited_keys) or ["-"])

    def _last_defaults(self) -> tuple[str | None, set[str] | None]:
        """(architecture, edited keys) saved with the last config; (None, None) if unknown."""
        arch = self._settings.value(KEY_LAST_ARCH, None)
        edited = self._settings.value(KEY_LAST_EDITED, None)
        if not arch or edited is None:
            return None, None
        keys = [edited] if isinstance(edited, str) else list(edited)
        return str(arch), {str(k) for k in keys if k != "-"}

    # ------------------------------------------------------------------ dataset plan
    def _on_setting_changed(self, key: str) -> None:
        if key in PLAN_KEYS:
            self._replan()
        self._refresh_advice()

    def _refresh_advice(self) -> None:
        """The advice and the memory estimate for the planned dataset, the base model's family
        and the settings."""
        report = self.plan.report if self.plan is not None else self._report
        arch = "sd1" if self.form.arch == TINY else self.form.arch
        self.advice_panel.set_current(self.form.to_config(strict=False))
        self.advice_panel.set_dataset(report.usable if report else 0, arch,
                                      report.images_per_epoch if report else None)
        buckets = [fit.bucket for fit in self.plan.fits] if self.plan is not None else None
        self.memory.request(self.form.to_config(strict=False), arch, buckets)

    def _replan(self) -> None:
        """Show the buckets and epoch arithmetic of the open dataset with the form's settings
        (`_on_planned` follows, at once or from the background for a large dataset)."""
        self.plan_view.show_dataset(self._report, self.form.to_config(strict=False),
                                    self.form.label_for)

    def _on_planned(self, plan) -> None:
        self.plan = plan
        self._refresh_advice()
        self._show_planned_steps(plan.total_steps if plan else self.form.steps_spin.value())

    def _show_planned_steps(self, steps: int) -> None:
        """Before a run the bar reads "0 / <the form's steps>", not Qt's default of 100."""
        if self.run.config is None and not self.run.is_active:
            self.progress.setRange(0, max(1, steps))

    def _update_buttons(self) -> None:
        has_data = bool(self.form.dataset_path) and (self._report is None
                                                     or self._report.usable > 0)
        self.start_button.setEnabled(self.run.can_start and has_data)
        self.load_preset_action.setEnabled(not self.run.is_active)
