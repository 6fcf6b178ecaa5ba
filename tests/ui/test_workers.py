"""JobRunner: events reach the GUI thread in order, one job at a time, cancel, failures."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import QThread

from lora_studio.core import events as ev
from lora_studio.core.errors import DatasetError
from lora_studio.ui.workers import JobRunner, TaskPool


def steps_job(total: int = 5, delay: float = 0.0, seen_threads: list | None = None):
    """A fake training job: a StepProgress per step, stopping when cancelled."""

    def job(emit, control):
        if seen_threads is not None:
            seen_threads.append(threading.current_thread())
        emit(ev.JobStarted(kind="train", total_steps=total))
        for step in range(1, total + 1):
            if control.cancelled:
                emit(ev.Cancelled(message=f"Cancelled at step {step - 1}"))
                return None
            time.sleep(delay)
            emit(ev.StepProgress(step=step, total_steps=total, loss=1.0 / step, lr=1e-4,
                                 it_per_s=10.0, eta_s=0.0))
        emit(ev.Finished(message="done"))
        return "result"

    return job


@pytest.fixture
def runner(qtbot):
    runner = JobRunner()
    yield runner
    runner.cancel()
    runner.wait()


def record(runner):
    events, threads = [], []

    def on_event(event):
        events.append(event)
        threads.append(QThread.currentThread())

    runner.event.connect(on_event)
    return events, threads


def test_events_arrive_in_order_in_gui_thread_then_finished(qtbot, runner):
    events, threads = record(runner)
    job_threads: list = []
    with qtbot.waitSignal(runner.finished, timeout=5000) as finished:
        assert runner.start(steps_job(5, seen_threads=job_threads), "training")
        assert runner.is_running
    assert [type(e).__name__ for e in events] == (
        ["JobStarted"] + ["StepProgress"] * 5 + ["Finished"])
    assert [e.step for e in events if isinstance(e, ev.StepProgress)] == [1, 2, 3, 4, 5]
    assert all(t is QThread.currentThread() for t in threads)  # delivered in the GUI thread
    assert job_threads[0] is not threading.main_thread()  # ...but the job ran elsewhere
    assert isinstance(finished.args[0], ev.Finished) and finished.args[0] is events[-1]
    assert not runner.is_running


def test_second_job_is_refused_while_one_runs(qtbot, runner):
    gate = threading.Event()

    def blocking_job(emit, control):
        gate.wait(5)

    assert runner.start(blocking_job, "training")
    with qtbot.waitSignal(runner.refused, timeout=1000) as refused:
        assert not runner.start(steps_job(1), "generation")
    assert "training is still running" in refused.args[0]
    with qtbot.waitSignal(runner.finished, timeout=5000):
        gate.set()
    with qtbot.waitSignal(runner.finished, timeout=5000) as finished:  # free again: accepted
        assert runner.start(steps_job(1), "generation")
    assert isinstance(finished.args[0], ev.Finished)


def test_cancel_stops_within_one_step(qtbot, runner):
    events, _ = record(runner)

    def cancel_at_two(event):
        if isinstance(event, ev.StepProgress) and event.step == 2:
            runner.cancel()

    runner.event.connect(cancel_at_two)
    with qtbot.waitSignal(runner.finished, timeout=10_000) as finished:
        runner.start(steps_job(100, delay=0.05), "training")
    assert isinstance(finished.args[0], ev.Cancelled)
    last_step = max(e.step for e in events if isinstance(e, ev.StepProgress))
    assert last_step <= 3  # the step running when cancel arrived may finish, no more


def test_studio_error_becomes_failed_with_message_and_traceback(qtbot, runner):
    def broken_job(emit, control):
        emit(ev.Log("starting"))
        raise DatasetError("No usable images in /data/cats.", "Add PNG or JPEG images.")

    with qtbot.waitSignal(runner.finished, timeout=5000) as finished:
        runner.start(broken_job, "training")
    failed = finished.args[0]
    assert isinstance(failed, ev.Failed)
    assert failed.message == "No usable images in /data/cats.\nAdd PNG or JPEG images."
    assert "Traceback" in failed.details and "broken_job" in failed.details


def test_unexpected_exception_is_failed_not_a_crash(qtbot, runner):
    def buggy_job(emit, control):
        return {}["missing"]

    with qtbot.waitSignal(runner.finished, timeout=5000) as finished:
        runner.start(buggy_job, "training")
    failed = finished.args[0]
    assert isinstance(failed, ev.Failed)
    assert "KeyError" in failed.message and "KeyError" in failed.details


def test_job_that_returns_without_terminal_event_ends_finished(qtbot, runner):
    events, _ = record(runner)
    with qtbot.waitSignal(runner.finished, timeout=5000) as finished:
        runner.start(lambda emit, control: 42, "job")
    assert isinstance(finished.args[0], ev.Finished) and finished.args[0].result == 42
    assert len(events) == 1


def test_task_pool_delivers_results_and_errors_in_gui_thread(qtbot):
    pool = TaskPool()
    results, errors, threads = [], [], []
    pool.submit(lambda: threading.current_thread().name,
                lambda value: (results.append(value), threads.append(QThread.currentThread())))
    pool.submit(lambda: 1 / 0, results.append, errors.append)
    qtbot.waitUntil(lambda: len(results) == 1 and len(errors) == 1, timeout=5000)
    assert results[0] != threading.main_thread().name
    assert threads[0] is QThread.currentThread()
    assert isinstance(errors[0], ZeroDivisionError)
    pool.shutdown()


def test_stop_cancels_and_returns_once_the_thread_is_gone(runner, qtbot):
    finished = []
    runner.finished.connect(finished.append)
    assert runner.start(steps_job(total=10_000, delay=0.01), "long")
    qtbot.waitUntil(lambda: runner.control is not None)
    assert runner.stop(10_000) is True
    assert not runner.is_running and runner.job_name == ""
    assert len(finished) == 1 and isinstance(finished[0], ev.Cancelled)
    assert runner.stop() is True  # nothing running: nothing to do


def test_a_jobs_pictures_become_qimages_in_the_job_thread(runner, qtbot):
    """The GUI thread only wraps a ready QImage in a QPixmap: the conversion happened in the
    worker (the converted image is waiting when the event arrives), pixel for pixel."""
    import numpy as np
    from PIL import Image

    from lora_studio.ui import qimages

    picture = Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(32, 48, 3))

    def job(emit, control):
        emit(ev.Preview(step=1, prompt="p", image=picture.copy()))
        return ev.Finished(message="done")

    arrived = []
    runner.event.connect(lambda event: arrived.append(
        (event, qimages.waiting()) if isinstance(event, ev.Preview) else None))
    with qtbot.waitSignal(runner.finished, timeout=5000):
        runner.start(job, "pictures")
    (event, waiting), = [a for a in arrived if a]
    assert waiting >= 1
    pixmap = qimages.to_pixmap(event.image)
    shown = pixmap.toImage().convertToFormat(pixmap.toImage().Format.Format_RGB888)
    rows = [bytes(shown.constScanLine(y))[:48 * 3] for y in range(32)]
    assert b"".join(rows) == np.asarray(picture).tobytes()
    assert qimages.waiting() == waiting - 1  # taken, not converted again
    key = id(event.image)
    del arrived[:], event
    import gc

    gc.collect()
    assert key not in qimages._ready  # a freed picture's conversion is dropped
