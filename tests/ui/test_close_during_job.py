"""Closing the window while a job runs: the question says what stopping keeps, Keep running
keeps it running, Stop and quit stops it at its next check (also while it is still setting up)
and leaves no thread or process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox
from test_train_tab_real import configure

from lora_studio.core import events as ev

ROOT = Path(__file__).resolve().parents[2]


def answer_quit_question(button_text: str, seen: list[QMessageBox]) -> None:
    """Answer the quit question once it is shown, remembering it in `seen`."""

    def answer() -> None:
        boxes = [w for w in QApplication.topLevelWidgets()
                 if isinstance(w, QMessageBox) and w.isVisible()]
        if not boxes:
            QTimer.singleShot(20, answer)
            return
        box = boxes[0]
        seen.append((box.text(), box.informativeText()))
        [button] = [b for b in box.buttons() if b.text() == button_text]
        button.click()

    QTimer.singleShot(0, answer)


def fake_steps(total: int, gate: threading.Event):
    def job(emit, control):
        emit(ev.JobStarted(kind="train", total_steps=total))
        for step in range(1, total + 1):
            emit(ev.StepProgress(step=step, total_steps=total, loss=0.5, lr=1e-4, it_per_s=1.0,
                                 eta_s=1.0))
            if step == 3:
                gate.set()
            control.wait_if_paused()
            if control.cancelled:
                return None
            threading.Event().wait(0.02)
        return None

    return job


def test_the_question_says_what_a_stopped_run_keeps_and_keep_running_keeps_it(
        make_window, dataset_dir, wait_for_dataset, qtbot, tmp_path):
    window = make_window()
    window.open_paths([dataset_dir])
    wait_for_dataset(window, rows=4)
    tab = window.train_tab
    tab.form.output_edit.setText(str(tmp_path / "out"))
    gate = threading.Event()
    tab._job_factory = lambda config: fake_steps(100_000, gate)
    assert tab.start_training()
    qtbot.waitUntil(lambda: gate.is_set() and tab.run.step >= 3, timeout=10_000)
    seen: list = []
    answer_quit_question("Keep running", seen)
    window.close()
    (title, keeps), = seen
    assert "Training is still running" in title
    assert "It is at step " in keeps and " of 100000." in keeps
    assert str(tab.build_config().lora_path) in keeps and "History > Resume" in keeps
    assert window.runner.is_running  # Keep running: nothing was stopped
    answer_quit_question("Stop and quit", seen)
    with qtbot.waitSignal(window.runner.finished, timeout=10_000) as ended:
        window.close()
    assert not window.runner.is_running and not window.isVisible()
    assert isinstance(ended.args[0], ev.Cancelled)


def test_stop_and_quit_during_set_up_stops_at_the_next_cache_batch(
        make_window, qtbot, tiny_model_dir, tmp_path, monkeypatch):
    """The real trainer, caching the sample's 376 images (16 + 360 regularization) one per VAE
    call: quitting while it caches stops it after at most the batch under way."""
    from diffusers import AutoencoderKL

    encoded: list[int] = []
    real_encode = AutoencoderKL.encode

    def counting_encode(self, x, *args, **kwargs):
        encoded.append(x.shape[0])
        return real_encode(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting_encode)
    monkeypatch.setattr("lora_studio.core.train.data.cache_batch_size", lambda w, h: 1)
    window = make_window()
    tab = window.train_tab
    configure(tab, tiny_model_dir, tmp_path / "out", steps=50, every=0)
    assert tab.form.reg_edit.text()  # the sample's regularization images: a long cache pass
    caching = []
    tab.run.event.connect(lambda e: isinstance(e, ev.Log) and e.message.startswith(
        "Caching the latents") and caching.append(e))
    assert tab.start_training()
    qtbot.waitUntil(lambda: bool(caching) and len(encoded) >= 2, timeout=90_000)
    seen: list = []
    at_quit: list[int] = []
    real_stop = window.runner.stop

    def stop(*args, **kwargs):
        at_quit.append(len(encoded))
        return real_stop(*args, **kwargs)

    monkeypatch.setattr(window.runner, "stop", stop)
    answer_quit_question("Stop and quit", seen)
    with qtbot.waitSignal(window.runner.finished, timeout=90_000) as ended:
        window.close()
    (_, keeps), = seen
    assert "still setting up" in keeps and "nothing is saved" in keeps
    assert not window.runner.is_running and not window.isVisible()
    assert len(encoded) - at_quit[0] <= 1  # at most the image being encoded at the click
    assert len(encoded) < 376
    end = ended.args[0]
    assert isinstance(end, ev.Cancelled) and "while caching the latents" in end.message
    assert not (tmp_path / "out" / "star.safetensors").exists()


QUIT_MID_RUN = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox
    from lora_studio.core import events as ev
    from lora_studio.core.paths import sample_dataset_dir
    from lora_studio.ui.main_window import MainWindow
    from lora_studio.ui.settings import studio_settings

    app = QApplication([])
    window = MainWindow(studio_settings(), probe_device=False, restore_dataset=False)
    tab = window.train_tab
    tab.set_dataset(sample_dataset_dir(), "zqstar")
    tab.set_base_model(sys.argv[1], "tiny")
    tab.form.steps_spin.setValue(50)
    tab.form.resolution_spin.setValue(32)
    tab.form.output_edit.setText(sys.argv[2])
    window.show()

    def answer():
        boxes = [w for w in app.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
        if not boxes:
            return QTimer.singleShot(20, answer)
        [stop] = [b for b in boxes[0].buttons() if b.text() == "Stop and quit"]
        stop.click()

    def on_event(event):
        if isinstance(event, ev.Log) and event.message.startswith(sys.argv[3]):
            QTimer.singleShot(0, answer)
            window.close()

    tab.run.event.connect(on_event)
    assert tab.start_training()
    app.exec()
    print("threads left:", [t.name for t in threading.enumerate()
                            if t is not threading.main_thread() and not t.daemon])
""")


def test_quitting_the_app_mid_job_ends_the_process_cleanly(tiny_model_dir, tmp_path):
    """A real app process quit while its job caches latents: it exits with 0, without Qt's
    "QThread: Destroyed while thread is still running" and with no thread left behind."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1",
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", QUIT_MID_RUN, str(tiny_model_dir), str(tmp_path / "out"),
         "Caching the latents"], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "QThread" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "threads left: []" in done.stdout
