"""Pause / Resume, Sample now and Save now driving the REAL trainer on the tiny model (a few
steps at 32 px on the CPU): Pause holds it in memory, requests made while paused are done right
after Resume, and the run ends with every step trained once."""

from __future__ import annotations

from PySide6.QtCore import Qt
from test_train_tab_real import RUN_TIMEOUT_MS, configure, tab  # noqa: F401 (fixture)

from lora_studio.core import events as ev
from lora_studio.ui.tabs.train_tab import TrainTab
from lora_studio.ui.train_run import RunState

STEPS = 6


def wait_until_still(qtbot, tab: TrainTab, quiet_ms: int = 1000) -> int:
    """Wait until no step arrives for `quiet_ms`; the step it stopped at."""
    seen = [tab.run.step]

    def still() -> bool:
        qtbot.wait(quiet_ms)
        seen.append(tab.run.step)
        return seen[-1] == seen[-2]

    qtbot.waitUntil(still, timeout=RUN_TIMEOUT_MS)
    return seen[-1]


def test_pause_resume_sample_and_save_now_on_the_real_trainer(tab, qtbot, tiny_model_dir,
                                                              tmp_path):
    out = tmp_path / "out"
    configure(tab, tiny_model_dir, out, steps=STEPS, every=0, sample_steps=2)
    tab.form.reg_edit.setText("")  # the sample's 360 regularization images: not needed here
    paused: list[int] = []

    def pause_on_first_step(event) -> None:
        if isinstance(event, ev.StepProgress) and not paused:
            paused.append(event.step)
            qtbot.mouseClick(tab.pause_button, Qt.LeftButton)

    tab.run.event.connect(pause_on_first_step)
    with qtbot.waitSignal(tab._runner.finished, timeout=RUN_TIMEOUT_MS) as done:
        assert tab.start_training()
        qtbot.waitUntil(lambda: bool(paused), timeout=RUN_TIMEOUT_MS)
        stopped = wait_until_still(qtbot, tab)
        assert stopped <= paused[0] + 1 < STEPS  # held within a step of the click
        assert tab.run.state is RunState.PAUSED and tab._runner.is_running
        assert tab.stats_label.text().startswith(f"Paused at step {stopped} — ")
        qtbot.mouseClick(tab.sample_button, Qt.LeftButton)
        qtbot.mouseClick(tab.save_button, Qt.LeftButton)
        assert wait_until_still(qtbot, tab, 500) == stopped  # queued, not done, while paused
        assert tab.preview_strip.count() == 0
        qtbot.mouseClick(tab.pause_button, Qt.LeftButton)  # Resume

    assert isinstance(done.args[0], ev.Finished), done.args[0]
    assert tab.loss_plot.steps == list(range(1, STEPS + 1))  # every step once, in order
    assert [t.entry.step for t in tab.preview_strip.tiles()] == [stopped + 1]
    assert (out / f"star-step{stopped + 1}.safetensors").is_file()
    assert tab.run.final_lora == out / "star.safetensors" and tab.run.flagged_previews() == []
    assert tab.stats_label.text() == "Finished."
