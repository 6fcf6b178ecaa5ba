"""The Train tab's "Run" panel: how a training run goes, drawn from its view-model.

Progress bar and step / total, loss (and its moving average), learning rate, it/s, ETA, a status
line (starting, training, "Paused at step N — …", cancelling, how it ended), the loss curve
with the validation loss and its best step (throttled redraws, see `LossPlot`), two banners —
overfitting (amber: the message, the advice and "Compare checkpoints at step N", which emits
`compare_requested_at(best_step)`) and divergence (while the run is paused by a NaN: "Lower the
learning rate and continue" = `run.resume(lr_scale=0.5)`, "Stop" = `run.cancel()`), every
preview image (`PreviewStrip`; a broken-looking one is flagged), the saved LoRA (with "Compare
checkpoints…", which the Train tab turns into the Mix tab's grid over the run's saved steps) and
a log.

`bind(run)` connects the view to a `lora_studio.ui.train_run.TrainRun`: it clears on the run's
`reset`, draws each event (`show_event`, GUI thread), each preview with its check, and the state
on `changed`. The view never talks to the job, and keeps no run state of its own.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core import events as ev
from lora_studio.ui.widgets.loss_plot import LossPlot
from lora_studio.ui.widgets.preview_strip import PreviewStrip

if TYPE_CHECKING:
    from lora_studio.ui.train_run import RunPreview, TrainRun

PAUSE_TIP = ("Hold training before its next step, in memory (nothing is unloaded). Resume "
             "continues exactly where it stopped; it/s and ETA do not count the pause.")
RESUME_TIP = "Continue training from the step where it paused."
STARTING = "Starting: loading the base model and caching the dataset…"
PREVIEWS_TITLE = "Previews (newest first)"
PAUSED_STYLE = "color: #e8b14a; font-weight: 600;"
AMBER, RED = (232, 177, 74), (224, 108, 90)
LOWER_LR_TIP = ("Continue from the last good step with the learning rates halved (the update "
                "that diverged was not applied).")


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainRunView(QGroupBox):
    """`bind(run)` once; then the run's signals drive it (`reset`, `show_event`, previews).
    `compare_requested_at(int)`: the overfitting banner's "Compare checkpoints at step N"."""

    compare_requested_at = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Run", parent)
        self.setObjectName("TrainRunView")
        self._run: TrainRun | None = None
        self.result_path: Path | None = None  # the LoRA shown as the result ("Show folder")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.progress.setValue(0)
        self.step_label = _stat("step –")
        self.loss_label = _stat("loss –")
        self.lr_label = _stat("lr –")
        self.speed_label = _stat("– it/s")
        self.eta_label = _stat("ETA –")
        stats = QHBoxLayout()
        stats.setSpacing(18)
        for label in (self.step_label, self.loss_label, self.lr_label, self.speed_label,
                      self.eta_label):
            stats.addWidget(label)
        stats.addStretch(1)
        self.stats_label = QLabel("Not started.")  # the run's status line
        self.stats_label.setObjectName("HintLabel")
        self.stats_label.setWordWrap(True)

        self.loss_plot = LossPlot()
        self.preview_strip = PreviewStrip(tile=112)
        self.previews_title = QLabel(PREVIEWS_TITLE)
        self.previews_title.setObjectName("HintLabel")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("Log")
        self.log_view.setMinimumHeight(40)
        layout = QVBoxLayout(self)
        layout.addWidget(self.progress)
        layout.addLayout(stats)
        layout.addWidget(self.stats_label)
        self._build_banners(layout)
        layout.addWidget(self.loss_plot, 3)
        layout.addWidget(self.previews_title)
        layout.addWidget(self.preview_strip)
        layout.addLayout(self._build_result_row())
        layout.addWidget(self.log_view, 1)

    def _build_banners(self, layout: QVBoxLayout) -> None:
        self.compare_step_button = QPushButton("Compare checkpoints at step –")
        self.compare_step_button.setToolTip("A grid of the LoRAs this run saved around its best "
                                            "validation step, side by side (Mix tab → Grid).")
        self.compare_step_button.clicked.connect(self._compare_best)
        self.overfit_banner = Banner("OverfitBanner", AMBER, [self.compare_step_button])
        self.lower_lr_button = _button("Lower the learning rate and continue", LOWER_LR_TIP)
        self.stop_button = _button("Stop", "End the run; the last good LoRA stays saved.")
        self.diverged_banner = Banner("DivergedBanner", RED,
                                      [self.lower_lr_button, self.stop_button])
        layout.addWidget(self.overfit_banner)
        layout.addWidget(self.diverged_banner)

    def _build_result_row(self) -> QHBoxLayout:
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.open_folder_button = QPushButton("Show folder")
        self.open_folder_button.setToolTip("Open the folder of the saved LoRA.")
        self.open_folder_button.clicked.connect(self._open_folder)
        self.open_folder_button.setVisible(False)
        self.compare_button = QPushButton("Compare checkpoints…")
        self.compare_button.setToolTip("A grid of the LoRA at every step this run saved, side "
                                       "by side (Mix tab → Grid): which step is best?")
        self.compare_button.setVisible(False)
        row = QHBoxLayout()
        row.addWidget(self.result_label, 1)
        row.addWidget(self.compare_button, 0, Qt.AlignTop)
        row.addWidget(self.open_folder_button, 0, Qt.AlignTop)
        return row

    # ------------------------------------------------------------------ binding
    def bind(self, run: TrainRun) -> None:
        """Follow `run`: its reset, events, previews and state."""
        self._run = run
        run.reset.connect(lambda config: self.reset(config.train.steps, config.sample.every))
        run.event.connect(self.show_event)
        run.preview_added.connect(self.add_preview)
        run.changed.connect(self.show_state)
        self.lower_lr_button.clicked.connect(lambda: run.resume(lr_scale=0.5))
        self.stop_button.clicked.connect(run.cancel)

    # ------------------------------------------------------------------ a run
    def reset(self, total_steps: int, sample_every: int) -> None:
        self.result_path = None
        self.loss_plot.clear_points()
        self.preview_strip.clear()
        self.previews_title.setText(PREVIEWS_TITLE)
        self.preview_strip.set_empty_text(
            f"Previews every {sample_every} steps appear here." if sample_every
            else "Previews are off (set “Preview every”).")
        self.log_view.clear()
        self.result_label.setText("")
        self.open_folder_button.setVisible(False)
        self.compare_button.setVisible(False)
        self.overfit_banner.hide()
        self.diverged_banner.hide()
        self.progress.setRange(0, total_steps)
        self.progress.setValue(0)
        self.step_label.setText(f"step 0 / {total_steps}")
        for label, text in ((self.loss_label, "loss –"), (self.lr_label, "lr –"),
                            (self.speed_label, "– it/s"), (self.eta_label, "ETA –")):
            label.setText(text)
        self.set_status(STARTING)

    def show_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.StepProgress):
            self._show_step(event)
        elif isinstance(event, ev.JobStarted):
            self.progress.setRange(0, max(1, event.total_steps))
            self.step_label.setText(f"step 0 / {event.total_steps}")
            self.log(event.message or f"Started: {event.total_steps} steps")
        elif isinstance(event, ev.Log):
            self.log(event.message if event.level == "info" else f"⚠ {event.message}")
        elif isinstance(event, ev.LoraSaved):
            self.log(f"Saved LoRA (step {event.step}): {event.path}")
        elif isinstance(event, ev.CheckpointSaved):
            self.log(f"Saved checkpoint (step {event.step}): {event.path}")
        elif isinstance(event, ev.Validation):
            self.loss_plot.add_validation(event.step, event.loss)
            self.log(f"Validation loss at step {event.step}: {event.loss:.4f} "
                     f"({event.images} images)")
        elif isinstance(event, (ev.Diverged, ev.Overfitting)):
            self.log(f"⚠ {event.message} {event.advice}")
        elif isinstance(event, (ev.Finished, ev.Cancelled, ev.Failed)):
            self._show_end(event)

    def add_preview(self, record: RunPreview, image) -> None:
        """A preview of the run, flagged when its check found a problem."""
        self.preview_strip.add_preview(record.step, record.prompt, image, record.index,
                                       problem=record.problem)
        if record.problem:
            self.log(f"⚠ The preview of step {record.step} is {record.problem}.")
            flagged = len(self.preview_strip.flagged())
            self.previews_title.setText(f"{PREVIEWS_TITLE} · ⚠ {flagged} flagged: "
                                        f"{record.problem} at step {record.step}")

    def show_state(self) -> None:
        """The run's status line, and the ETA marked while paused."""
        run = self._run
        if run is None:
            return
        self.set_status(run.status_text())
        self.stats_label.setStyleSheet(PAUSED_STYLE if run.paused else "")
        if run.progress is not None and run.terminal is None:
            eta = f"ETA {format_eta(run.progress.eta_s)}"
            self.eta_label.setText(f"{eta} · paused" if run.paused else eta)
        self._show_banners(run)

    def _show_banners(self, run: TrainRun) -> None:
        """The overfitting alert (kept after it came), and the divergence choice (while the
        run is paused by it)."""
        alert = run.overfitting
        if alert is not None:
            self.overfit_banner.set_text("Overfitting", f"{alert.message} {alert.advice}")
            self.compare_step_button.setText(f"Compare checkpoints at step {alert.best_step}")
        self.overfit_banner.setVisible(alert is not None)
        diverged = run.diverged if run.paused and run.can_control else None
        if diverged is not None:
            saved = (f" The last good LoRA is saved: {diverged.lora_path}"
                     if diverged.lora_path else "")
            self.diverged_banner.set_text(f"Paused at step {diverged.step}: training diverged",
                                          f"{diverged.message} {diverged.advice}{saved}")
        self.diverged_banner.setVisible(diverged is not None)

    def saved_lora(self) -> Path | None:
        """The LoRA file the bound run ended with (its final save, else the last it wrote)."""
        return self._run.saved_lora() if self._run is not None else None

    def set_status(self, text: str) -> None:
        self.stats_label.setText(text)

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    # ------------------------------------------------------------------ helpers
    def _show_step(self, event: ev.StepProgress) -> None:
        self.progress.setRange(0, max(1, event.total_steps))
        self.progress.setValue(event.step)
        self.loss_plot.add(event.step, event.loss)
        self.step_label.setText(f"step {event.step} / {event.total_steps}")
        self.loss_label.setText(f"loss {event.loss:.4f} "
                                f"(average {self.loss_plot.averages[-1]:.4f})")
        self.lr_label.setText(f"lr {event.lr:.2e}")
        self.speed_label.setText(f"{event.it_per_s:.2f} it/s")  # measured inside the steps
        paused = self._run is not None and self._run.paused
        self.eta_label.setText(f"ETA {format_eta(event.eta_s)}" + (" · paused" if paused else ""))

    def _show_end(self, event: ev.Event) -> None:
        self.loss_plot.flush()
        self.eta_label.setText("ETA 0:00" if isinstance(event, ev.Finished) else "ETA –")
        if isinstance(event, ev.Failed):
            self.log(f"Failed: {event.message}")
            return
        finished = isinstance(event, ev.Finished)
        message = event.message or ("Training finished." if finished else "Training cancelled.")
        self.log(message)
        path = self.saved_lora()
        self.result_label.setText(message)
        self.result_label.setToolTip(str(path) if path else "")
        self.open_folder_button.setVisible(path is not None and path.exists())
        self.compare_button.setVisible(path is not None and path.exists())
        self.result_path = path

    def _compare_best(self) -> None:
        alert = self._run.overfitting if self._run is not None else None
        if alert is not None:
            self.compare_requested_at.emit(alert.best_step)

    def _open_folder(self) -> None:
        if self.result_path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.result_path.parent)))


class RunControls(QWidget):
    """Sample now, Save now, Pause / Resume and Cancel of a bound `TrainRun`: enabled while its
    run goes (Sample now only when the run has preview prompts)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._run: TrainRun | None = None
        self.sample_button = _button("Sample now", "Render the preview prompts after the "
                                     "current step (while paused: right after Resume).")
        self.save_button = _button("Save now", "Save the LoRA as trained so far after the "
                                   "current step, as <name>-step<N>.safetensors (while paused: "
                                   "right after Resume).")
        self.pause_button = _button("Pause", PAUSE_TIP)
        self.cancel_button = _button("Cancel", "Stop after the current step and save the LoRA "
                                     "trained so far (a checkpoint too, to resume later). "
                                     "Also ends a paused run.")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for button in (self.sample_button, self.save_button, self.pause_button,
                       self.cancel_button):
            layout.addWidget(button)
        self.show_state()

    def bind(self, run: TrainRun) -> None:
        self._run = run
        self.sample_button.clicked.connect(run.sample_now)
        self.save_button.clicked.connect(run.save_now)
        self.pause_button.clicked.connect(run.toggle_pause)
        self.cancel_button.clicked.connect(run.cancel)
        run.changed.connect(self.show_state)
        self.show_state()

    def show_state(self) -> None:
        run = self._run
        control = run is not None and run.can_control
        for button in (self.cancel_button, self.pause_button, self.save_button):
            button.setEnabled(control)
        self.sample_button.setEnabled(control and run.has_prompts)
        paused = run is not None and run.paused
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.setToolTip(RESUME_TIP if paused else PAUSE_TIP)


class Banner(QFrame):
    """A coloured box across the Run panel: a bold title, a text and its buttons (hidden until
    `set_text` and `show`)."""

    def __init__(self, name: str, rgb: tuple[int, int, int], buttons: list[QPushButton],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        r, g, b = rgb
        self.setStyleSheet(f"#{name} {{ background: rgba({r}, {g}, {b}, 40); "
                           f"border: 1px solid rgb({r}, {g}, {b}); border-radius: 6px; }}")
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.buttons = buttons
        self.title = self.body = ""
        row = QHBoxLayout()
        row.addStretch(1)
        for button in buttons:
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(self.label)
        layout.addLayout(row)
        self.hide()

    def set_text(self, title: str, text: str) -> None:
        self.title, self.body = title, text
        self.label.setText(f"<b>⚠ {html.escape(title)}</b><br>{html.escape(text)}")

    def text(self) -> str:
        """The banner's words, without markup."""
        return f"{self.title}\n{self.body}"


def _button(text: str, tip: str) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    return button


def _stat(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("RunStat")
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return label
