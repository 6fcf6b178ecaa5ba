"""The Train tab's run queue as a view-model: the core `RunQueue` (saved in the user data
folder's `queue.json`) plus running its waiting entries one after another.

`run_all()` starts the first waiting entry through the tab's start path (`start(config) -> bool`,
the same path as the Start button); when the runner's `finished` signal brings that run's
terminal event, `RunQueue.ended` records its outcome and the next waiting entry starts (from the
event loop, once the run's own end has been handled). `stop()` lets the current run end and
starts no other. Signals: `changed()` the entries or whether the queue runs changed.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from lora_studio.core import events as ev
from lora_studio.core.train.config import TrainConfig
from lora_studio.core.train.queue import WAITING, QueuedRun, RunQueue, variations
from lora_studio.ui.workers import JobRunner

RANKS = (8, 16, 32)


class QueueModel(QObject):
    """The queue of the Train tab (see the module docstring)."""

    changed = Signal()

    def __init__(self, runner: JobRunner, start: Callable[[TrainConfig], bool],
                 queue: RunQueue | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue if queue is not None else RunQueue()
        self._runner = runner
        self._start = start
        self.current: QueuedRun | None = None  # the entry running now
        self.running = False  # run_all() was asked and the queue has not run dry or stopped
        runner.finished.connect(self._on_finished)
        runner.started.connect(lambda name: self.changed.emit())

    @property
    def runs(self) -> list[QueuedRun]:
        return self.queue.runs

    @property
    def waiting(self) -> int:
        return sum(r.status == WAITING for r in self.queue.runs)

    @property
    def can_run(self) -> bool:
        return not self.running and self.waiting > 0 and not self._runner.is_running

    def add(self, config: TrainConfig, label: str = "") -> QueuedRun:
        run = self.queue.add(config, label)
        self.changed.emit()
        return run

    def add_variations(self, config: TrainConfig, key: str = "lora.rank",
                       values: tuple = RANKS) -> list[QueuedRun]:
        added = [self.queue.add(variant, label)
                 for label, variant in variations(config, key, list(values))]
        self.changed.emit()
        return added

    def remove(self, run_id: str) -> None:
        self.queue.remove(run_id)
        self.changed.emit()

    def run_all(self) -> bool:
        """Start the waiting entries, one after another. False when none could start."""
        self.running = True
        return self._start_next()

    def stop(self) -> None:
        """Start no further entry (the current run goes on to its end)."""
        self.running = False
        self.changed.emit()

    def _start_next(self) -> bool:
        run = self.queue.next_waiting() if self.running else None
        if run is None or not self._start(run.config()):
            self.running = False
            self.changed.emit()
            return False
        self.current = run
        self.queue.started(run)
        self.changed.emit()
        return True

    def _on_finished(self, terminal: ev.Event) -> None:
        if self.current is None:  # another job (not one of the queue's runs) ended
            self.changed.emit()  # (the queue can run now)
            return
        self.queue.ended(self.current, terminal)
        self.current = None
        self.changed.emit()
        if self.running:  # after every other slot of this run's end has run
            QTimer.singleShot(0, self._start_next)
