"""The one worker module: every thread the window uses is started here.

* `JobRunner` runs the one GPU job (training, generation) in its own QThread. The job is a plain
  callable `job(emit, control)`; every event it emits (a `lora_studio.core.events` dataclass) is
  re-emitted by `JobRunner.event` in the GUI thread, and the UI steers the job only through the
  `JobControl` (cancel, pause, sample-now, save-now). One job at a time: a second `start` while
  one runs is refused with a message.
* `TaskPool` runs short, light background calls (a dataset scan, a thumbnail decode) in a private
  QThreadPool and hands each result to a callback in the GUI thread.
* `device_probe()` describes the compute device once per process; torch is imported in a plain
  background thread so the window never waits for it, and the rest of the engine after it
  (`core/warmup.py`), so the first run's set-up does not hold the window with imports;
  `prefetch_base_model(spec)` loads the chosen base model's tokenizers the same way.

No widget is touched from a worker thread: results cross as Python objects / QImage through
queued signals and become QPixmap in the GUI thread; a job's pictures are converted to QImage
in its own thread (`qimages.prepare`) before they cross.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, QThreadPool, Signal, Slot

from lora_studio.core import events as ev
from lora_studio.core.jobs import TERMINAL_EVENTS, Job, JobControl, failed_event, run_job
from lora_studio.ui.qimages import prepare

__all__ = ["Job", "JobRunner", "TaskPool", "TERMINAL_EVENTS", "device_probe", "failed_event",
           "prefetch_base_model"]


class _JobWorker(QObject):
    """Lives in the job thread; runs the job through `core.jobs.run_job` (exactly one terminal
    event, failures as Failed events)."""

    event = Signal(object)
    done = Signal(object)  # the terminal event, after it was emitted

    def __init__(self, job: Job, control: JobControl) -> None:
        super().__init__()
        self._job = job
        self._control = control

    @Slot()
    def run(self) -> None:
        outcome = run_job(self._job, self._emit, self._control)
        self.done.emit(outcome.terminal)

    def _emit(self, event: ev.Event) -> None:
        prepare(event)  # its picture becomes a QImage here, not in the GUI thread
        self.event.emit(event)


class JobRunner(QObject):
    """Runs one job at a time in a worker QThread and carries its events to the GUI thread.

    Signals (all delivered in the GUI thread):
      started(str)     a job began; the argument is its name
      event(object)    every event the job emits, in order, ending with Finished/Failed/Cancelled
      finished(object) after the terminal event; the argument is that terminal event
      refused(str)     `start` was called while a job runs; the message says why
    """

    started = Signal(str)
    event = Signal(object)
    finished = Signal(object)
    refused = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: _JobWorker | None = None
        self._control: JobControl | None = None
        self._name = ""
        self._keeps: Callable[[], str] | None = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None

    @property
    def job_name(self) -> str:
        return self._name if self.is_running else ""

    @property
    def control(self) -> JobControl | None:
        """The running job's control (pause / sample-now / save-now); None when idle."""
        return self._control

    def what_stopping_keeps(self) -> str:
        """What stopping the running job now keeps and loses, in the words of whoever started it
        (the window's quit question); "" when idle or not said."""
        return self._keeps() if self.is_running and self._keeps is not None else ""

    def start(self, job: Job, name: str = "job", control: JobControl | None = None,
              keeps: Callable[[], str] | None = None) -> bool:
        """Start `job(emit, control)` in the worker thread (with `control`, or a fresh one);
        `keeps()` says what stopping it would keep (`what_stopping_keeps`). Returns False (and
        emits `refused`) when a job is already running."""
        if self.is_running:
            self.refused.emit(f"Cannot start {name}: {self._name} is still running. "
                              f"Wait for it to finish or cancel it first.")
            return False
        self._name, self._keeps = name, keeps
        self._control = control or JobControl()
        self._thread = QThread()
        self._thread.setObjectName(f"lora-studio-{name}")
        self._worker = _JobWorker(job, self._control)
        self._worker.moveToThread(self._thread)
        self._worker.event.connect(self.event)  # queued: worker and runner live in other threads
        self._worker.done.connect(self._on_done)
        self._thread.started.connect(self._worker.run)
        self._thread.start()
        self.started.emit(name)
        return True

    def cancel(self) -> None:
        """Ask the running job to stop at its next check (no-op when idle)."""
        if self._control is not None:
            self._control.cancel()

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Cancel the running job and wait until it has ended and its thread is gone (the
        terminal event is delivered meanwhile). True when nothing runs any more."""
        from PySide6.QtCore import QCoreApplication, QDeadlineTimer, QEventLoop

        self.cancel()
        deadline = QDeadlineTimer(timeout_ms)
        while self._thread is not None and not deadline.hasExpired():
            QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
            if self._thread is not None:
                self._thread.wait(20)
        return self._thread is None

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the worker thread ended (used when the window closes)."""
        return self._thread.wait(timeout_ms) if self._thread is not None else True

    @Slot(object)
    def _on_done(self, terminal: ev.Event) -> None:
        thread = self._thread
        if thread is None:
            return
        thread.quit()
        thread.wait()
        self._thread = self._worker = self._control = self._keeps = None
        self.finished.emit(terminal)


class TaskPool(QObject):
    """Short background calls in a private thread pool; results come back in the GUI thread.

    `submit(fn, on_result, on_error)` runs `fn()` in the pool; `on_result(value)` or
    `on_error(exc)` is then called in the GUI thread. `shutdown()` drops queued calls and waits
    for running ones, so nothing calls back into a window that is gone.
    """

    _done = Signal(int, object, object)  # task id, result, exception

    def __init__(self, max_threads: int = 2, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._ids = itertools.count(1)
        self._callbacks: dict[
            int, tuple[Callable[[Any], None], Callable[[BaseException], None]]] = {}
        self._done.connect(self._deliver)

    def submit(self, fn: Callable[[], Any], on_result: Callable[[Any], None],
               on_error: Callable[[BaseException], None] | None = None) -> int:
        task_id = next(self._ids)
        self._callbacks[task_id] = (on_result, on_error or _reraise_later)
        done = self._done

        def run() -> None:
            try:
                value = fn()
            except Exception as exc:  # noqa: BLE001 - handed to on_error in the GUI thread
                value, error = None, exc
            else:
                error = None
            try:
                done.emit(task_id, value, error)
            except RuntimeError:  # the pool's owner was deleted meanwhile: nobody to tell
                pass

        self._pool.start(run)
        return task_id

    def cancel_pending(self) -> None:
        """Drop the calls that have not started yet (their callbacks never run)."""
        self._pool.clear()

    def wait(self, timeout_ms: int = -1) -> bool:
        return self._pool.waitForDone(timeout_ms)

    def shutdown(self) -> None:
        self._pool.clear()
        self._pool.waitForDone()
        self._callbacks.clear()

    @Slot(int, object, object)
    def _deliver(self, task_id: int, value: Any, exc: BaseException | None) -> None:
        callbacks = self._callbacks.pop(task_id, None)
        if callbacks is None:
            return
        on_result, on_error = callbacks
        if exc is not None:
            on_error(exc)
        else:
            on_result(value)


def _reraise_later(exc: BaseException) -> None:
    raise exc


# ---------------------------------------------------------------------------- device probe
def describe_device() -> str:
    """"CUDA: <name>, <mem> GB", "Apple MPS" or "CPU". Imports torch: call it off the GUI thread."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"CUDA: {props.name}, {props.total_memory / 1024**3:.0f} GB"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "Apple MPS"
    return "CPU"


class DeviceProbe(QObject):
    """Describes the device once per process, in a daemon thread; `ready(str)` in the GUI thread."""

    ready = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.text: str | None = None
        self._lock = threading.Lock()
        self._started = False
        self.ready.connect(self._remember)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._probe, name="lora-studio-device-probe", daemon=True).start()

    def _probe(self) -> None:
        try:
            text = describe_device()
        except Exception as exc:  # noqa: BLE001 - a broken torch install must not stop the app
            text = f"unknown ({type(exc).__name__})"
        self.ready.emit(text)
        self._warm_up()

    @staticmethod
    def _warm_up() -> None:
        """Import the engine now, before any job (see `core/warmup.py`), and keep the
        libraries' chatter (load reports, progress bars) off the terminal as the CLI does
        (LORA_STUDIO_DEBUG=1 keeps it)."""
        import os

        from lora_studio.core.quiet import quiet_libraries
        from lora_studio.core.warmup import import_engine

        try:
            import_engine()
        except Exception:  # noqa: BLE001 - the job that needs it reports a broken install
            return
        if not os.environ.get("LORA_STUDIO_DEBUG"):
            quiet_libraries()

    @Slot(str)
    def _remember(self, text: str) -> None:
        self.text = text


_probe: DeviceProbe | None = None


def prefetch_base_model(spec: Any) -> None:
    """Load the base model's tokenizers in a daemon thread (after the engine's warm-up), so
    that a job's set-up does not build them while the window waits (`core/warmup.py`)."""

    def prefetch() -> None:
        from lora_studio.core.warmup import prefetch_model

        try:
            prefetch_model(spec)
        except Exception:  # noqa: BLE001 - the job that loads the model reports any problem
            pass

    threading.Thread(target=prefetch, name="lora-studio-prefetch", daemon=True).start()


def device_probe() -> DeviceProbe:
    """The process-wide device probe (created in the GUI thread on first use)."""
    global _probe
    if _probe is None:
        _probe = DeviceProbe()
    return _probe
