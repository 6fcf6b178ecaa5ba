"""The Train tab's run controls with scripted jobs (no torch): Pause holds the job in
`wait_if_paused` and Resume continues at the next step; Sample now / Save now reach the job's
control and come back as a preview and a saved LoRA (queued while paused, done right after
Resume); Cancel ends a paused run; a black preview is flagged in the strip. The view-model
`TrainRun` owns the state the widgets show."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt

from lora_studio.core import events as ev
from lora_studio.ui.tabs.train_tab import TrainTab
from lora_studio.ui.train_run import RunState
from lora_studio.ui.workers import JobRunner

BLACK = (0, 0, 0)
TIMEOUT_MS = 5000


def star_like(color=(200, 40, 40)) -> Image.Image:
    """A preview that looks like a picture: a coloured square on white (Tiny Shapes-like)."""
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste(color, (16, 16, 48, 48))
    return image


class ScriptedTraining:
    """A job factory whose job trains "forever" (until cancelled) the way the trainer does:
    `wait_if_paused()` before each step, the save / sample requests taken after it. It records
    what it saw of the control, from its own thread."""

    def __init__(self, out: Path, step_s: float = 0.005, black_previews: bool = True) -> None:
        self.out = out
        self.step_s = step_s
        self.black_previews = black_previews
        self.steps: list[int] = []  # the steps it trained, in order
        self.blocked_before: list[int] = []  # steps it was about to train when it saw a pause
        self.blocked = threading.Event()  # it is waiting in wait_if_paused now

    def __call__(self, config):
        def job(emit, control):
            emit(ev.JobStarted(kind="train", total_steps=config.train.steps))
            step = 0
            while True:
                if control.paused:
                    self.blocked_before.append(step + 1)
                    self.blocked.set()
                control.wait_if_paused()
                self.blocked.clear()
                if control.cancelled:
                    emit(ev.Cancelled(message=f"Training cancelled at step {step}."))
                    return
                time.sleep(self.step_s)
                step += 1
                self.steps.append(step)
                emit(ev.StepProgress(step=step, total_steps=config.train.steps, loss=0.5,
                                     lr=1e-3, it_per_s=50.0, eta_s=12.0))
                self._side_work(emit, control, step)

        return job

    def _side_work(self, emit, control, step: int) -> None:
        if control.take_save_request():
            emit(ev.LoraSaved(step=step, path=self.out / f"star-step{step}.safetensors"))
        if control.take_sample_request():
            image = Image.new("RGB", (64, 64)) if self.black_previews else star_like()
            emit(ev.Preview(step=step, prompt="zqstar", image=image))


def make_tab(qtbot, settings, dataset_dir, factory) -> TrainTab:
    runner = JobRunner()
    tab = TrainTab(runner, settings, job_factory=factory)
    tab._test_runner = runner
    qtbot.addWidget(tab)
    tab.set_dataset(dataset_dir, "zqstar")
    tab.form.steps_spin.setValue(100_000)
    return tab


def stop(tab: TrainTab) -> None:
    if tab._runner.is_running:
        tab._runner.stop()


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.LeftButton)


def pause_and_wait(qtbot, tab: TrainTab, job: ScriptedTraining) -> int:
    """Press Pause; return the last step trained once the job blocks and the UI caught up."""
    click(qtbot, tab.pause_button)
    assert job.blocked.wait(TIMEOUT_MS / 1000), "the job never saw the pause"
    qtbot.waitUntil(lambda: tab.run.step == job.steps[-1], timeout=TIMEOUT_MS)
    return job.steps[-1]


def test_controls_are_off_while_idle_and_on_while_a_run_goes(qtbot, settings, dataset_dir,
                                                             tmp_path):
    job = ScriptedTraining(tmp_path)
    tab = make_tab(qtbot, settings, dataset_dir, job)
    controls = (tab.pause_button, tab.sample_button, tab.save_button, tab.cancel_button)
    assert tab.run.state is RunState.IDLE and tab.stats_label.text() == "Not started."
    assert not any(b.isEnabled() for b in controls) and tab.start_button.isEnabled()
    click(qtbot, tab.start_button)
    try:
        qtbot.waitUntil(lambda: tab.run.state is RunState.RUNNING, timeout=TIMEOUT_MS)
        assert all(b.isEnabled() for b in controls) and not tab.start_button.isEnabled()
        assert tab.pause_button.text() == "Pause" and not tab.form.steps_spin.isEnabled()
    finally:
        stop(tab)
    assert not any(b.isEnabled() for b in controls) and tab.start_button.isEnabled()


def test_pause_holds_the_job_and_resume_continues_at_the_next_step(qtbot, settings,
                                                                   dataset_dir, tmp_path):
    job = ScriptedTraining(tmp_path)
    tab = make_tab(qtbot, settings, dataset_dir, job)
    tab.start_training()
    try:
        qtbot.waitUntil(lambda: tab.run.step >= 3, timeout=TIMEOUT_MS)
        stopped = pause_and_wait(qtbot, tab, job)
        assert job.blocked_before[-1] == stopped + 1  # blocked before its next step
        qtbot.wait(200)
        assert job.steps[-1] == stopped and tab.run.step == stopped  # nothing moved
        assert tab.run.state is RunState.PAUSED and tab.pause_button.text() == "Resume"
        assert tab.stats_label.text() == (f"Paused at step {stopped} — Resume continues "
                                          "exactly where it stopped.")
        assert tab.progress.value() == stopped and tab.step_label.text().startswith(
            f"step {stopped} /")
        assert tab.eta_label.text() == "ETA 0:12 · paused"  # the trainer's ETA, marked
        assert tab.cancel_button.isEnabled() and tab.start_button.isEnabled() is False

        click(qtbot, tab.pause_button)  # Resume
        qtbot.waitUntil(lambda: tab.run.step >= stopped + 3, timeout=TIMEOUT_MS)
        assert tab.run.state is RunState.RUNNING and tab.pause_button.text() == "Pause"
        assert tab.stats_label.text() == "Training…" and tab.eta_label.text() == "ETA 0:12"
        assert job.steps == list(range(1, len(job.steps) + 1))  # no step skipped or repeated
        assert [s for s, _ in tab.run.losses] == list(range(1, tab.run.step + 1))
    finally:
        stop(tab)


def test_a_pause_while_the_model_loads_holds_the_run_before_its_first_step(
        qtbot, settings, dataset_dir, tmp_path):
    loaded = threading.Event()
    job = ScriptedTraining(tmp_path)

    def slow_start(config):
        steps = job(config)

        def run(emit, control):
            loaded.wait(TIMEOUT_MS / 1000)  # "loading the base model"
            return steps(emit, control)
        return run

    tab = make_tab(qtbot, settings, dataset_dir, slow_start)
    tab.start_training()
    try:
        assert tab.run.state is RunState.STARTING and tab.pause_button.isEnabled()
        click(qtbot, tab.pause_button)
        assert tab.stats_label.text() == ("Paused before the first step (the model still "
                                          "loads) — Resume starts training.")
        loaded.set()
        assert job.blocked.wait(TIMEOUT_MS / 1000) and job.blocked_before == [1]
        qtbot.waitUntil(lambda: "Started: 100000 steps" in tab.log_view.toPlainText(),
                        timeout=TIMEOUT_MS)  # JobStarted: loaded
        qtbot.wait(100)
        assert tab.run.state is RunState.PAUSED and job.steps == []  # and still held
        assert tab.step_label.text() == "step 0 / 100000"
        click(qtbot, tab.pause_button)  # Resume
        qtbot.waitUntil(lambda: tab.run.step >= 2, timeout=TIMEOUT_MS)
        assert tab.run.state is RunState.RUNNING and job.steps[:2] == [1, 2]
    finally:
        stop(tab)


def test_sample_and_save_now_act_after_the_next_step(qtbot, settings, dataset_dir, tmp_path):
    job = ScriptedTraining(tmp_path, step_s=0.01, black_previews=False)
    tab = make_tab(qtbot, settings, dataset_dir, job)
    tab.start_training()
    try:
        qtbot.waitUntil(lambda: tab.run.step >= 2, timeout=TIMEOUT_MS)
        with qtbot.waitSignal(tab.run.preview_added, timeout=TIMEOUT_MS):
            asked = job.steps[-1]  # the job's last step (it may have moved on by the click)
            click(qtbot, tab.sample_button)
            assert tab.run.sample_pending and "a preview after this step" in \
                tab.stats_label.text()
        tiles = tab.preview_strip.tiles()
        assert len(tiles) == 1 and asked <= tiles[0].entry.step <= asked + 2  # a step later
        assert not tiles[0].problem_label.isVisibleTo(tiles[0])  # a picture: not flagged
        with qtbot.waitSignal(tab.run.event, timeout=TIMEOUT_MS,
                              check_params_cb=lambda e: isinstance(e, ev.LoraSaved)):
            click(qtbot, tab.save_button)
        saved = tab.run.last_lora
        assert saved.name == f"star-step{tab.run.step}.safetensors"
        assert f"Saved LoRA (step {tab.run.step}): {saved}" in tab.log_view.toPlainText()
        assert not tab.run.sample_pending and not tab.run.save_pending
        assert tab.stats_label.text() == "Training…"
    finally:
        stop(tab)


def test_requests_while_paused_wait_for_resume_then_act_at_once(qtbot, settings, dataset_dir,
                                                                tmp_path):
    job = ScriptedTraining(tmp_path)
    tab = make_tab(qtbot, settings, dataset_dir, job)
    tab.start_training()
    try:
        qtbot.waitUntil(lambda: tab.run.step >= 2, timeout=TIMEOUT_MS)
        stopped = pause_and_wait(qtbot, tab, job)
        click(qtbot, tab.sample_button)
        click(qtbot, tab.save_button)
        qtbot.wait(150)
        assert tab.preview_strip.count() == 0 and tab.run.last_lora is None  # still paused
        assert job.steps[-1] == stopped
        assert tab.stats_label.text().endswith(
            "Queued: a preview and a save right after Resume.")
        click(qtbot, tab.pause_button)  # Resume
        qtbot.waitUntil(lambda: tab.preview_strip.count() == 1 and bool(tab.run.last_lora),
                        timeout=TIMEOUT_MS)
        assert tab.preview_strip.tiles()[0].entry.step == stopped + 1  # the first step after
        assert tab.run.last_lora.name == f"star-step{stopped + 1}.safetensors"
    finally:
        stop(tab)


def test_cancel_ends_a_paused_run(qtbot, settings, dataset_dir, tmp_path):
    job = ScriptedTraining(tmp_path)
    tab = make_tab(qtbot, settings, dataset_dir, job)
    tab.start_training()
    try:
        qtbot.waitUntil(lambda: tab.run.step >= 2, timeout=TIMEOUT_MS)
        stopped = pause_and_wait(qtbot, tab, job)
        with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS) as done:
            click(qtbot, tab.cancel_button)
            assert tab.run.state is RunState.CANCELLING
            assert tab.stats_label.text().startswith("Cancelling")
            assert not tab.pause_button.isEnabled() and not tab.cancel_button.isEnabled()
    finally:
        stop(tab)
    assert isinstance(done.args[0], ev.Cancelled)
    assert job.steps[-1] == stopped  # woke up to stop, trained nothing more
    assert tab.run.state is RunState.CANCELLED and tab.stats_label.text() == "Cancelled."
    assert tab.last_terminal is done.args[0]
    assert f"Training cancelled at step {stopped}." in tab.result_label.text()
    assert tab.start_button.isEnabled() and tab.form.steps_spin.isEnabled()
    assert tab.pause_button.text() == "Pause" and not tab.pause_button.isEnabled()


def test_a_black_preview_is_flagged_in_the_strip(qtbot, settings, dataset_dir, tmp_path):
    def two_previews(config):
        def job(emit, control):
            emit(ev.JobStarted(kind="train", total_steps=2))
            for step, image in ((1, star_like()), (2, Image.new("RGB", (64, 64), BLACK))):
                emit(ev.StepProgress(step=step, total_steps=2, loss=0.3, lr=1e-3,
                                     it_per_s=5.0, eta_s=0.0))
                emit(ev.Preview(step=step, prompt="zqstar", image=image))
            emit(ev.Finished(message="Training finished."))
        return job

    tab = make_tab(qtbot, settings, dataset_dir, two_previews)
    with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS) as done:
        assert tab.start_training()
    assert isinstance(done.args[0], ev.Finished), done.args[0]
    black, fine = tab.preview_strip.tiles()  # newest first
    assert black.entry.problem == "all black" and fine.entry.problem is None
    assert black.problem_label.isVisibleTo(black) and "all black" in black.problem_label.text()
    assert "NaN" in black.toolTip() and "learning rate" in black.toolTip()
    assert not fine.problem_label.isVisibleTo(fine) and "⚠" not in fine.toolTip()
    assert [p.problem for p in tab.run.flagged_previews()] == ["all black"]
    assert "1 flagged: all black at step 2" in tab.run_view.previews_title.text()
    assert "⚠ The preview of step 2 is all black." in tab.log_view.toPlainText()
    assert tab.stats_label.text() == "Finished."


def test_events_of_another_job_do_not_touch_the_run(qtbot, settings, dataset_dir, tmp_path):
    tab = make_tab(qtbot, settings, dataset_dir, ScriptedTraining(tmp_path))
    runner = tab._runner

    def generation(emit, control):
        emit(ev.StepProgress(step=3, total_steps=9, loss=0.1, lr=0.0, it_per_s=1, eta_s=1))
        emit(ev.Finished(message="Generated."))

    with qtbot.waitSignal(runner.finished, timeout=TIMEOUT_MS):
        assert runner.start(generation, "generation")
        assert not tab.start_button.isEnabled() and not tab.pause_button.isEnabled()
    assert tab.run.state is RunState.IDLE and tab.run.step == 0 and tab.run.terminal is None
    assert tab.progress.value() == 0 and tab.start_button.isEnabled()


def diverging_training(out: Path, seen: dict, after_cancel: bool = False):
    """Diverges at step 3 the way the trainer does with `pause_on_divergence`: pause, say so,
    wait; then take the learning-rate scale. With `after_cancel`, it diverges only once the
    person has pressed Cancel (the pause must not swallow the cancel)."""

    def factory(config):
        def job(emit, control):
            seen["pause_on_divergence"] = control.pause_on_divergence
            emit(ev.JobStarted(kind="train", total_steps=config.train.steps))
            for step in range(1, config.train.steps + 1):
                control.wait_if_paused()
                if control.cancelled:
                    emit(ev.Cancelled(message=f"Training cancelled at step {step - 1}."))
                    return
                time.sleep(0.005)
                if step == 3 and "scale" not in seen:
                    while after_cancel and not control.cancelled:
                        time.sleep(0.005)
                    control.pause()
                    emit(ev.Diverged(step=3, message="Training diverged at step 3: the loss "
                                     "became nan.", advice="Lower train.learning_rate.",
                                     lora_path=out / "star.safetensors"))
                    control.wait_if_paused()
                    seen["scale"] = control.take_lr_scale()
                    continue
                emit(ev.StepProgress(step=step, total_steps=config.train.steps, loss=0.5,
                                     lr=1e-3, it_per_s=50.0, eta_s=1.0))
            emit(ev.Finished(message="Training finished."))
        return job

    return factory


def test_a_diverged_run_pauses_itself_and_resumes_at_a_lower_rate(qtbot, settings, dataset_dir,
                                                                 tmp_path):
    seen: dict = {}
    tab = make_tab(qtbot, settings, dataset_dir, diverging_training(tmp_path, seen))
    tab.form.steps_spin.setValue(20)
    with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS) as done:
        tab.start_training()
        qtbot.waitUntil(lambda: tab.run.state is RunState.PAUSED, timeout=TIMEOUT_MS)
        assert seen["pause_on_divergence"] is True  # the app's runs pause, the CLI's fail
        assert tab.stats_label.text().startswith("Paused at step 3: training diverged")
        assert "⚠ Training diverged at step 3" in tab.log_view.toPlainText()
        assert tab.pause_button.text() == "Resume" and tab.cancel_button.isEnabled()
        tab.run.resume(lr_scale=0.5)
    assert isinstance(done.args[0], ev.Finished) and seen["scale"] == 0.5
    assert tab.run.diverged is None and tab.stats_label.text() == "Finished."


def test_cancel_pressed_before_the_run_diverges_still_ends_it(qtbot, settings, dataset_dir,
                                                             tmp_path):
    seen: dict = {}
    tab = make_tab(qtbot, settings, dataset_dir,
                   diverging_training(tmp_path, seen, after_cancel=True))
    tab.form.steps_spin.setValue(20)
    with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS) as done:
        tab.start_training()
        qtbot.waitUntil(lambda: tab.run.step == 2, timeout=TIMEOUT_MS)
        click(qtbot, tab.cancel_button)  # the job is in step 3, about to diverge
    assert isinstance(done.args[0], ev.Cancelled) and tab.stats_label.text() == "Cancelled."
