"""The Mix tab's Grid on the real engine (tiny model, CPU): a 2 × 3 strength grid whose cells
arrive one by one, a second grid cancelled midway that keeps its cells, the labelled PNG, a
live preview that steps aside, bad strengths named inline, and the grid over a training run's
steps opened from the Train tab's "Compare checkpoints…"."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from lora_files import make_lora_file
from lora_studio.core import events as ev
from lora_studio.core.generate.grid import compose
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.ui.widgets.strength_grid_panel import RUN, STRENGTHS
from run_files import PROMPTS, make_training_run

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def loras(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid_loras")
    return [make_lora_file(tiny_model_dir, folder / f"{name}.safetensors", seed=seed)
            for name, seed in (("style", 31), ("ink", 32))]


@pytest.fixture
def window(make_window, tiny_model_dir, one_torch_thread):
    window = make_window()
    window.model_picker.choose(tiny_model_dir)
    window.tabs.setCurrentWidget(window.mix_tab)
    window.mix_tab.side_tabs.setCurrentIndex(1)
    window.resize(1280, 800)
    window.show()
    window.mix_tab.preview._timer.setInterval(50)
    yield window
    window.shutdown()


def stacked(window, qtbot, loras):
    tab = window.mix_tab
    for path in loras:
        tab.library.add_files([path])
    qtbot.waitUntil(lambda: len(tab.library.items) == len(loras) and not any(
        i.loading for i in tab.library.items), timeout=30_000)
    for path, weight in zip(loras, (0.6, 0.4)):
        assert tab.add_to_stack(path, weight)
    return tab, tab.grid_panel


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def set_grid(panel, rows: str, cols: str | None, steps: int = 2) -> None:
    panel.set_mode(STRENGTHS)
    panel.rows_combo.setCurrentIndex(0)
    panel.rows_edit.setText(rows)
    panel.cols_combo.setCurrentIndex(2 if cols is not None else 0)  # "none", style, ink
    if cols is not None:
        panel.cols_edit.setText(cols)
    panel.prompt_edit.setText("a red circle")
    panel.seed_spin.setValue(5)
    panel.steps_spin.setValue(steps)


def test_a_grid_fills_cell_by_cell_cancels_midway_and_saves_its_png(window, qtbot, loras,
                                                                   tmp_path, monkeypatch):
    tab, panel = stacked(window, qtbot, loras)
    grid = tab.grid_model
    filled = []
    grid.cell_ready.connect(lambda r, c, _image: filled.append((r, c, panel.view.filled())))
    set_grid(panel, "0, 1", "0, 0.5, 1")
    with qtbot.waitSignal(grid.finished, timeout=TIMEOUT_MS) as end:
        qtbot.mouseClick(panel.render_button, Qt.LeftButton)
        assert panel.cancel_button.isEnabled() and not panel.render_button.isEnabled()
    assert isinstance(end.args[0], ev.Finished)
    # one signal per cell, in reading order, each already on screen when it is announced
    assert filled == [(0, 0, 1), (0, 1, 2), (0, 2, 3), (1, 0, 4), (1, 1, 5), (1, 2, 6)]
    assert (panel.view.row_labels, panel.view.col_labels) == (["0", "1"], ["0", "0.5", "1"])
    assert "Rows: style · Columns: ink" in panel.view.title
    assert [(e.name, e.weight) for e in window.session_model.stack] == [("style", 0.6),
                                                                       ("ink", 0.4)]
    # cell (1, 1) is style 1 + ink 0.5 at the grid's seed, as a direct render draws it
    direct = GenerationSession(window.session_model.base_model)
    direct.add_lora(loras[0], 1.0)
    direct.add_lora(loras[1], 0.5)
    expected = direct.generate(GenerationRequest("a red circle", steps=2, seed=5,
                                                 sampler="DPM++ 2M"))[0].image
    assert np.abs(pixels(grid.cells[1][1]) - pixels(expected)).max() <= 1
    first_cells = [row[:] for row in grid.cells]

    # A second, slower grid: cancelled after its second cell, it stops and keeps those cells.
    set_grid(panel, "0, 0.5, 1", "0, 1", steps=6)
    filled.clear()

    def cancel_after_two(_r, _c, _image) -> None:
        if len(filled) == 2:
            qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)

    grid.cell_ready.connect(cancel_after_two)
    with qtbot.waitSignal(grid.finished, timeout=TIMEOUT_MS) as end:
        assert panel.render()
    grid.cell_ready.disconnect(cancel_after_two)
    assert isinstance(end.args[0], ev.Cancelled)
    assert grid.cells_done == 2 == panel.view.filled() and len(filled) == 2
    assert panel.status_label.text() == "Cancelled: 2 of 6 cells kept."
    assert panel.render_button.isEnabled() and panel.save_button.isEnabled()
    assert not window.runner.is_running

    # Save PNG…: the labelled canvas of the cells done, as `lora-studio grid` composes it
    target = tmp_path / "grid.png"
    monkeypatch.setattr("PySide6.QtWidgets.QFileDialog.getSaveFileName",
                        lambda *a, **k: (str(target), "PNG images (*.png)"))
    qtbot.mouseClick(panel.save_button, Qt.LeftButton)
    assert panel.status_label.text() == f"Saved {target}"
    saved = pixels(Image.open(target))
    canvas = compose(grid.cells, ["0", "0.5", "1"], ["ink 0", "ink 1"], "style")
    assert saved.shape == pixels(canvas).shape and np.array_equal(saved, pixels(canvas))
    assert grid.cells[0][0] is not first_cells[0][0]


def test_the_live_preview_steps_aside_for_a_grid_and_renders_after_it(window, qtbot, loras):
    tab, panel = stacked(window, qtbot, loras)
    refused = []
    window.runner.refused.connect(refused.append)
    tab.preview.steps = 40  # still rendering when the grid is asked for
    tab.preview_check.setChecked(True)
    qtbot.waitUntil(lambda: window.session_model.is_previewing, timeout=TIMEOUT_MS)
    started = tab.preview.renders_started
    set_grid(panel, "0, 1", None)
    with qtbot.waitSignal(tab.grid_model.finished, timeout=TIMEOUT_MS) as end:
        assert panel.render()
    assert isinstance(end.args[0], ev.Finished) and tab.grid_model.cells_done == 2
    assert refused == []  # no "busy" message: the preview stopped for the grid
    qtbot.waitUntil(lambda: tab.preview.renders_started == started + 1
                    and not tab.preview.pending and not window.runner.is_running,
                    timeout=TIMEOUT_MS)  # and the preview came back after it
    assert tab.preview.renders_shown >= 1


def test_strengths_that_cannot_be_read_are_named_inline(window, qtbot, loras):
    _, panel = stacked(window, qtbot, loras)
    set_grid(panel, "0, 0.5, x", None)
    assert not panel.render()
    assert panel.problem_label.isVisible()
    assert panel.problem_label.text().startswith("Rows: 'x' is not a number")
    set_grid(panel, "0, 1", "")
    assert not panel.render() and panel.problem_label.text().startswith("Columns: no strengths")
    panel.cols_combo.setCurrentIndex(1)  # the rows' LoRA again
    panel.cols_edit.setText("0, 1")
    assert not panel.render() and "another LoRA" in panel.problem_label.text()
    assert not window.runner.is_running and panel.view.filled() == 0


def test_compare_checkpoints_opens_the_grid_over_the_runs_steps(window, qtbot, tiny_model_dir,
                                                                tmp_path):
    run = make_training_run(tiny_model_dir, tmp_path)  # steps 1 (checkpoint), 2, 3 (ckpt), 4
    final = run / "t.safetensors"

    def finished_run(_config):
        def job(emit, control):
            emit(ev.LoraSaved(step=4, path=final, final=True))
            emit(ev.Finished(message="Training finished."))
        return job

    train = window.train_tab
    train._job_factory = finished_run
    train.set_dataset(tmp_path / "data", "zqstar")
    with qtbot.waitSignal(window.runner.finished, timeout=10_000):
        assert train.start_training()
    view = train.run_view
    assert view.compare_button.isVisibleTo(view)
    qtbot.mouseClick(view.compare_button, Qt.LeftButton)
    tab, panel = window.mix_tab, window.mix_tab.grid_panel
    assert window.tabs.currentWidget() is tab and tab.side_tabs.currentIndex() == 1
    assert panel.mode_combo.currentIndex() == RUN and panel.run_edit.text() == str(run)
    assert "4 saved states of t" in panel.run_summary.text()
    assert "Steps 1, 3 are only in checkpoints" in panel.run_summary.text()
    assert "trained on" not in panel.run_summary.text()  # the base model in use
    assert "2 preview prompts" in panel.prompt_edit.placeholderText()
    assert (panel.seed_spin.value(), panel.steps_spin.value()) == (7, 2)  # the run's previews
    with qtbot.waitSignal(tab.grid_model.finished, timeout=TIMEOUT_MS) as end:
        assert panel.render()
    assert isinstance(end.args[0], ev.Finished)
    assert panel.view.col_labels == ["step 1", "step 2", "step 3", "step 4\nfinal"]
    assert panel.view.row_labels == PROMPTS and panel.view.filled() == 8
    assert (run / "t-step3.safetensors").is_file()  # exported on the way

    # A run that kept only its final file says so, and how to keep steps next time.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "t.safetensors").write_bytes(final.read_bytes())
    window.show_run_grid(lonely)
    assert "only its final LoRA" in panel.run_summary.text()
    assert "output.save_every" in panel.run_summary.text()
    window.session_model.set_base_model(None)  # the built-in model, not the run's
    window.show_run_grid(run)
    assert f"It was trained on {tiny_model_dir.name}; the grid renders on Tiny Shapes" in \
        panel.run_summary.text()

    # The Train tab's overfitting banner opens it saying which saved LoRA is nearest the best step.
    window.train_tab.compare_best_requested.emit(run, 3)
    assert window.tabs.currentWidget() is tab
    assert ("validation loss was best at step 3; the nearest saved LoRA is step 3 "
            "(t-step3.safetensors)") in panel.run_summary.text()
    # ... and opens at that step: its column marked before anything renders, and after.
    assert panel.view.col_labels[2] == "step 3\n★ best" and panel.view.highlight == 2
    assert panel.view.filled() == 0
    window.session_model.set_base_model(str(tiny_model_dir))
    with qtbot.waitSignal(tab.grid_model.finished, timeout=TIMEOUT_MS):
        assert panel.render()
    assert panel.view.highlight == 2 and panel.view.filled() == 8
    panel.view.resize(700, 400)
    panel.view.grab().save(str(tmp_path / "best.png"))
    window.train_tab.compare_best_requested.emit(run, 2)  # nearest saved: step 2 itself
    assert panel.view.highlight == 1 and panel.view.col_labels[1] == "step 2\n★ best"
    window.show_run_grid(run)  # the plain Compare: nothing marked
    assert panel.view.highlight is None
