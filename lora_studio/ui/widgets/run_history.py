"""The Train tab's History panel: the runs the studio started (`core/train/runs.py`
`known_runs`), each with its name, status, steps done / total and date; the selected one with
its loss curve (a read-only `LossPlot`), its last previews, its log, and "Resume" when it was
cancelled, crashed or killed after writing a checkpoint (`RunSummary.can_resume`).

`refresh()` reads the run folders again (the tab calls it when a run ends);
`resume_requested(Path)` asks the tab to resume that run folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.train.runs import RunSummary, known_runs, summarize_run
from lora_studio.ui.widgets.loss_plot import LossPlot

MAX_RUNS = 100  # the newest runs listed
THUMBS = 4  # the last previews shown
THUMB_SIZE = 96


def run_line(summary: RunSummary) -> str:
    """"name · status · steps done / total · date" for the list."""
    steps = f"{summary.steps_done} / {summary.total_steps or '?'} steps"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.started)) \
        if summary.started else "no date"
    return f"{summary.folder.name} · {summary.status} · {steps} · {when}"


class RunHistory(QWidget):
    resume_requested = Signal(Path)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("RunHistory")
        self.summaries: list[RunSummary] = []
        self.list = QListWidget()
        self.list.setObjectName("HistoryList")
        self.list.currentRowChanged.connect(self._show_row)
        self.title_label = QLabel("No runs yet: the runs you start are listed here.")
        self.title_label.setWordWrap(True)
        self.title_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Go on from this run's newest checkpoint (the same as "
                                      "lora-studio train CONFIG --resume CHECKPOINT).")
        self.resume_button.clicked.connect(self._on_resume)
        self.loss_plot = LossPlot()
        self.thumbs = QHBoxLayout()
        self.thumbs.setSpacing(4)
        self.thumbs.setAlignment(Qt.AlignLeft)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self._build()
        self._show_row(-1)

    def _build(self) -> None:
        head = QHBoxLayout()
        head.addWidget(self.title_label, 1)
        head.addWidget(self.resume_button, 0, Qt.AlignTop)
        details = QWidget()
        layout = QVBoxLayout(details)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.loss_plot, 2)
        layout.addLayout(self.thumbs)
        layout.addWidget(self.log_view, 1)
        splitter = QSplitter(Qt.Vertical)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.list)
        splitter.addWidget(details)
        splitter.setSizes([110, 430])
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 6, 0, 0)
        outer.addWidget(splitter)

    # ------------------------------------------------------------------ public API
    def refresh(self) -> None:
        """List the known runs again, keeping the selected one selected."""
        current = self.selected
        self.summaries = [summarize_run(f) for f in known_runs()[:MAX_RUNS]]
        self.list.blockSignals(True)
        self.list.clear()
        for summary in self.summaries:
            item = QListWidgetItem(run_line(summary))
            item.setToolTip(str(summary.folder))
            self.list.addItem(item)
        self.list.blockSignals(False)
        folders = [s.folder for s in self.summaries]
        row = folders.index(current.folder) if current and current.folder in folders else (
            0 if folders else -1)
        self.list.setCurrentRow(row)
        self._show_row(row)

    def select(self, folder: str | Path) -> None:
        """Show the run of `folder` (it must be listed)."""
        folders = [s.folder.resolve() for s in self.summaries]
        self.list.setCurrentRow(folders.index(Path(folder).resolve()))

    @property
    def selected(self) -> RunSummary | None:
        row = self.list.currentRow()
        return self.summaries[row] if 0 <= row < len(self.summaries) else None

    def lines(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def thumbnail_count(self) -> int:
        return self.thumbs.count()

    # ------------------------------------------------------------------ the selected run
    def _show_row(self, row: int) -> None:
        summary = self.summaries[row] if 0 <= row < len(self.summaries) else None
        self.loss_plot.clear_points()
        self._clear_thumbs()
        self.log_view.clear()
        self.resume_button.setVisible(bool(summary and summary.can_resume))
        if summary is None:
            self.title_label.setText("No runs yet: the runs you start are listed here."
                                     if not self.summaries else "Choose a run.")
            return
        self.title_label.setText(_details(summary))
        for step, loss in summary.losses:
            self.loss_plot.add(step, loss)
        add_validation = getattr(self.loss_plot, "add_validation", None)  # newer LossPlot
        for step, loss in summary.validation if add_validation else ():
            add_validation(step, loss)
        self.loss_plot.flush()
        for path in summary.previews[-THUMBS:]:
            self._add_thumb(path)
        self.log_view.setPlainText("\n".join(line for line in summary.log if line))

    def _add_thumb(self, path: Path) -> None:
        label = QLabel()
        pixmap = QPixmap(str(path))
        if not pixmap.isNull():
            label.setPixmap(pixmap.scaled(THUMB_SIZE, THUMB_SIZE, Qt.KeepAspectRatio,
                                          Qt.SmoothTransformation))
        label.setToolTip(path.name)
        self.thumbs.addWidget(label)

    def _clear_thumbs(self) -> None:
        while self.thumbs.count():
            widget = self.thumbs.takeAt(0).widget()
            if widget is not None:
                widget.hide()
                widget.deleteLater()

    def _on_resume(self) -> None:
        summary = self.selected
        if summary is not None:
            self.resume_requested.emit(summary.folder)


def _details(summary: RunSummary) -> str:
    """The selected run in a few lines (rich text)."""
    lines = [f"<b>{_escape(summary.folder.name)}</b> — {summary.status}, step "
             f"{summary.steps_done} of {summary.total_steps or '?'}"]
    if summary.message:
        lines.append(_escape(summary.message))
    if summary.validation:
        step, loss = summary.validation[-1]
        lines.append(f"validation loss {loss:.4g} at step {step}")
    if summary.loras:
        lines.append(f"LoRA: {_escape(summary.loras[-1].name)}")
    if summary.can_resume:
        lines.append(f"can resume from {_escape(summary.resumable_from.name)}")
    lines.append(f"<span style='color:gray'>{_escape(str(summary.folder))}</span>")
    return "<br>".join(lines)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
