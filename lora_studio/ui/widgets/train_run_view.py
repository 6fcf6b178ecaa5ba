"""The Train tab's "Run" panel: how a training run goes, drawn from its events.

Progress bar and step / total, loss (and its moving average), learning rate, it/s, ETA, the loss
curve (throttled redraws, see `LossPlot`), every preview image (`PreviewStrip`), the saved LoRA
(with "Compare checkpoints…", which the Train tab turns into the Mix tab's grid over the run's
saved steps) and a log. `show_event(event)` takes each `lora_studio.core.events` dataclass in
the GUI thread; the view never talks to the job.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
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

STARTING = "Starting: loading the base model and caching the dataset…"


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainRunView(QGroupBox):
    """`reset(total_steps, sample_every)` before a run; `show_event(event)` for each event."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Run", parent)
        self.setObjectName("TrainRunView")
        self.final_lora: Path | None = None  # LoraSaved(final=True) of this run
        self.last_lora: Path | None = None  # the last LoRA file this run wrote
        self.result_path: Path | None = None
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.progress.setValue(0)
        self.stats_label = QLabel("Not started.")
        self.stats_label.setObjectName("HintLabel")
        self.stats_label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
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
        stats.addWidget(self.stats_label)

        self.loss_plot = LossPlot()
        self.preview_strip = PreviewStrip(tile=112)
        previews_title = QLabel("Previews (newest first)")
        previews_title.setObjectName("HintLabel")
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
        result_row = QHBoxLayout()
        result_row.addWidget(self.result_label, 1)
        result_row.addWidget(self.compare_button, 0, Qt.AlignTop)
        result_row.addWidget(self.open_folder_button, 0, Qt.AlignTop)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("Log")
        self.log_view.setMinimumHeight(40)

        layout = QVBoxLayout(self)
        layout.addWidget(self.progress)
        layout.addLayout(stats)
        layout.addWidget(self.loss_plot, 3)
        layout.addWidget(previews_title)
        layout.addWidget(self.preview_strip)
        layout.addLayout(result_row)
        layout.addWidget(self.log_view, 1)

    # ------------------------------------------------------------------ a run
    def reset(self, total_steps: int, sample_every: int) -> None:
        self.final_lora = self.last_lora = self.result_path = None
        self.loss_plot.clear_points()
        self.preview_strip.clear()
        self.preview_strip.set_empty_text(
            f"Previews every {sample_every} steps appear here." if sample_every
            else "Previews are off (set “Preview every”).")
        self.log_view.clear()
        self.result_label.setText("")
        self.open_folder_button.setVisible(False)
        self.compare_button.setVisible(False)
        self.progress.setRange(0, total_steps)
        self.progress.setValue(0)
        self.step_label.setText(f"step 0 / {total_steps}")
        for label, text in ((self.loss_label, "loss –"), (self.lr_label, "lr –"),
                            (self.speed_label, "– it/s"), (self.eta_label, "ETA –")):
            label.setText(text)
        self.stats_label.setText(STARTING)

    def show_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.StepProgress):
            self._show_step(event)
        elif isinstance(event, ev.Preview):
            self.preview_strip.add_preview(event.step, event.prompt, event.image, event.index)
        elif isinstance(event, ev.JobStarted):
            self.progress.setRange(0, max(1, event.total_steps))
            self.step_label.setText(f"step 0 / {event.total_steps}")
            self.stats_label.setText("Training…")
            self.log(event.message or f"Started: {event.total_steps} steps")
        elif isinstance(event, ev.Log):
            self.log(event.message if event.level == "info" else f"⚠ {event.message}")
        elif isinstance(event, ev.LoraSaved):
            self.last_lora = Path(event.path)
            if event.final:
                self.final_lora = Path(event.path)
            self.log(f"Saved LoRA (step {event.step}): {event.path}")
        elif isinstance(event, ev.CheckpointSaved):
            self.log(f"Saved checkpoint (step {event.step}): {event.path}")
        elif isinstance(event, (ev.Finished, ev.Cancelled, ev.Failed)):
            self._show_end(event)

    def saved_lora(self, event: ev.Finished | ev.Cancelled) -> Path | None:
        """The LoRA file a run ended with: its final save, else the last file it wrote."""
        final = self.final_lora if isinstance(event, ev.Finished) else None
        return final or self.last_lora or _lora_in(event.outputs)

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
        self.speed_label.setText(f"{event.it_per_s:.2f} it/s")
        self.eta_label.setText(f"ETA {format_eta(event.eta_s)}")
        if self.stats_label.text() == STARTING:
            self.stats_label.setText("Training…")

    def _show_end(self, event: ev.Event) -> None:
        self.loss_plot.flush()
        self.eta_label.setText("ETA 0:00" if isinstance(event, ev.Finished) else "ETA –")
        if isinstance(event, ev.Failed):
            self.log(f"Failed: {event.message}")
            self.stats_label.setText("Training failed (see the message).")
            return
        finished = isinstance(event, ev.Finished)
        message = event.message or ("Training finished." if finished else "Training cancelled.")
        self.log(message)
        self.stats_label.setText("Finished." if finished else "Cancelled.")
        path = self.saved_lora(event)
        self.result_label.setText(message)
        self.result_label.setToolTip(str(path) if path else "")
        self.open_folder_button.setVisible(path is not None and path.exists())
        self.compare_button.setVisible(path is not None and path.exists())
        self.result_path = path

    def _open_folder(self) -> None:
        if self.result_path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.result_path.parent)))


def _lora_in(paths: list[Path]) -> Path | None:
    loras = [Path(p) for p in paths if str(p).endswith(".safetensors")]
    return loras[-1] if loras else None


def _stat(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("RunStat")
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return label
