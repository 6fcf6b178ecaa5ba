"""Train tab driving the REAL trainer on the tiny model (a few steps at 32 px on the CPU):
Start shows the loss curve, previews and progress and hands over the saved LoRA; Cancel stops
within a step or two and keeps what was trained; a failing run explains itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from lora_studio.core import events as ev
from lora_studio.core.paths import sample_dataset_dir
from lora_studio.ui.tabs.train_tab import TrainTab
from lora_studio.ui.widgets.error_dialog import ErrorDialog
from lora_studio.ui.workers import JobRunner

RUN_TIMEOUT_MS = 90_000
SAMPLE_DATASET = sample_dataset_dir()


@pytest.fixture
def tab(qtbot, settings):
    runner = JobRunner()
    tab = TrainTab(runner, settings)
    tab._test_runner = runner
    qtbot.addWidget(tab)
    yield tab
    if runner.is_running:  # never leave a training thread behind
        runner.stop()


def configure(tab: TrainTab, base: Path, out: Path, steps: int, every: int,
              sample_steps: int = 2) -> None:
    tab.set_dataset(SAMPLE_DATASET, "zqstar")
    form = tab.form
    tab.set_base_model(str(base), base.name)
    form.steps_spin.setValue(steps)
    form.resolution_spin.setValue(32)
    form.rank_spin.setValue(4)
    form.batch_spin.setValue(1)
    form.sample_every_spin.setValue(every)
    form.sample_steps_spin.setValue(sample_steps)
    form.output_edit.setText(str(out))
    form.name_edit.setText("star")


def test_a_real_run_shows_loss_previews_progress_and_hands_over_the_lora(
        tab, qtbot, tiny_model_dir, tmp_path):
    configure(tab, tiny_model_dir, tmp_path / "out", steps=6, every=2)
    assert tab.form.prompts() == ["zqstar"]
    with qtbot.waitSignal(tab.lora_trained, timeout=RUN_TIMEOUT_MS) as trained:
        qtbot.mouseClick(tab.start_button, Qt.LeftButton)
        assert tab._runner.is_running and tab.cancel_button.isEnabled()
        assert not tab.form.steps_spin.isEnabled()  # settings locked while they are used
        # The curve is drawn while training runs (by the throttled redraw), not only at the end.
        qtbot.waitUntil(lambda: len(tab.loss_plot.curve_data()[0]) >= 1, timeout=RUN_TIMEOUT_MS)
        assert not isinstance(tab.last_terminal, ev.Finished)
    qtbot.waitUntil(lambda: not tab._runner.is_running, timeout=10_000)

    lora = trained.args[0]
    assert lora == tmp_path / "out" / "star.safetensors" and lora.is_file()
    assert tab.trained_lora == lora and str(lora) in tab.result_label.text()
    steps, losses = tab.loss_plot.curve_data()
    assert steps == [1, 2, 3, 4, 5, 6] and all(loss > 0 for loss in losses)
    assert len(tab.loss_plot.smoothed_data()[0]) == 6
    assert tab.step_label.text() == "step 6 / 6" and tab.progress.value() == 6
    assert re.fullmatch(r"[\d.]+ it/s", tab.speed_label.text())
    assert tab.lr_label.text().startswith("lr ") and tab.lr_label.text() != "lr –"
    tiles = tab.preview_strip.tiles()
    assert [t.caption_label.text() for t in tiles] == ["step 6", "step 4", "step 2"]
    assert all(not t.entry.pixmap.isNull() and t.entry.pixmap.width() == 32 for t in tiles)
    assert tab.start_button.isEnabled() and not tab.cancel_button.isEnabled()


def test_cancel_stops_within_a_step_and_keeps_the_lora(tab, qtbot, tiny_model_dir, tmp_path):
    configure(tab, tiny_model_dir, tmp_path / "out", steps=60, every=0)
    clicked_at: list[int] = []
    trained: list[Path] = []
    tab.lora_trained.connect(trained.append)

    def click_cancel_on_first_step(event) -> None:
        if isinstance(event, ev.StepProgress) and not clicked_at:
            clicked_at.append(event.step)
            qtbot.mouseClick(tab.cancel_button, Qt.LeftButton)

    tab._runner.event.connect(click_cancel_on_first_step)
    with qtbot.waitSignal(tab._runner.finished, timeout=RUN_TIMEOUT_MS) as done:
        qtbot.mouseClick(tab.start_button, Qt.LeftButton)
    terminal = done.args[0]
    assert isinstance(terminal, ev.Cancelled), terminal
    stopped_at = int(re.search(r"cancelled at step (\d+) of 60", terminal.message).group(1))
    assert clicked_at == [1] and stopped_at <= 3  # within a step or two of the click
    saved = tmp_path / "out" / "star.safetensors"
    assert saved.is_file() and str(saved) in terminal.message
    assert terminal.message in tab.result_label.text()  # the user sees where it is
    assert tab.stats_label.text() == "Cancelled." and not trained
    assert tab.start_button.isEnabled() and tab.form.steps_spin.isEnabled()


def test_a_run_that_fails_shows_the_message_with_the_traceback_behind_details(
        tab, qtbot, tmp_path):
    tab.show()
    configure(tab, tmp_path / "no-such-model", tmp_path / "out", steps=2, every=0)
    with qtbot.waitSignal(tab._runner.finished, timeout=RUN_TIMEOUT_MS) as done:
        assert tab.start_training()
    assert isinstance(done.args[0], ev.Failed)
    dialogs = [w for w in QApplication.topLevelWidgets()
               if isinstance(w, ErrorDialog) and w.isVisible()]
    assert dialogs, "a failed run must tell the user why"
    assert "no-such-model" in dialogs[-1].message_label.text()
    assert "Traceback" in dialogs[-1].details_view.toPlainText()
    assert not dialogs[-1].details_visible
    for dialog in dialogs:
        dialog.close()
