"""The validation loss, the overfitting alert and the divergence choice in the Train tab's Run
panel, with scripted jobs (no torch): validation points reach the loss plot's data with the
best (lowest) step marked; an Overfitting event shows the amber banner whose button emits the
best step; a run paused by a divergence shows "Lower the learning rate and continue" (the job
takes a learning-rate scale of 0.5 and finishes) and "Stop" (it ends cancelled)."""

from __future__ import annotations

from lora_studio.core import events as ev
from lora_studio.ui.train_run import RunState
from lora_studio.ui.widgets.loss_plot import LossPlot
from tests.ui.test_train_run import TIMEOUT_MS, click, diverging_training, make_tab

VALIDATION = [(0, 0.30), (10, 0.22), (20, 0.18), (30, 0.21), (40, 0.25)]
OVERFIT = ev.Overfitting(step=40, best_step=20,
                         message="The validation loss rose for 20 steps while the training "
                                 "loss kept falling: the LoRA is memorising its images.",
                         advice="Use the LoRA of step 20, or train fewer steps.")


def validating_training(overfit: bool = False):
    """40 steps with falling training loss and the validation losses of VALIDATION (at step 0
    and every 10 steps), then (with `overfit`) the alert, then Finished."""

    def factory(config):
        def job(emit, control):
            emit(ev.JobStarted(kind="train", total_steps=40))
            emit(ev.Validation(step=0, loss=VALIDATION[0][1], images=4))
            for step in range(1, 41):
                emit(ev.StepProgress(step=step, total_steps=40, loss=0.4 - step * 0.005,
                                     lr=1e-4, it_per_s=20.0, eta_s=(40 - step) / 20))
                if step % 10 == 0:
                    emit(ev.Validation(step=step, loss=dict(VALIDATION)[step], images=4))
            if overfit:
                emit(OVERFIT)
            emit(ev.Finished(message="Training finished."))
        return job

    return factory


def test_validation_points_are_buffered_until_the_next_redraw(qtbot):
    plot = LossPlot(redraw_ms=10_000)
    qtbot.addWidget(plot)
    plot.add_validation(0, 0.3)
    plot.add_validation(10, 0.2)
    assert plot.validation_data() == ([], []) and plot.best_marker() is None  # not yet drawn
    plot.flush()
    assert plot.validation_data() == ([0.0, 10.0], [0.3, 0.2])
    assert plot.best_marker() == (10, "best: step 10") and plot.redraws == 1
    plot.clear_points()
    assert plot.validation_data() == ([], []) and plot.best_marker() is None


def test_validation_losses_reach_the_plot_with_the_best_step_marked(qtbot, settings,
                                                                    dataset_dir):
    tab = make_tab(qtbot, settings, dataset_dir, validating_training())
    with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS) as done:
        assert tab.start_training()
    assert isinstance(done.args[0], ev.Finished), done.args[0]
    plot = tab.loss_plot
    steps, losses = plot.validation_data()  # what the validation curve draws
    assert (steps, losses) == ([float(s) for s, _ in VALIDATION], [v for _, v in VALIDATION])
    assert plot.curve_data()[0] == [float(s) for s in range(1, 41)]  # training beside it
    assert tab.run.validations == VALIDATION
    best = min(VALIDATION, key=lambda p: p[1])
    assert tab.run.best_validation() == best == plot.best_validation() == (20, 0.18)
    assert plot.best_marker() == (20, "best: step 20")
    names = [label.text for _, label in plot.getPlotItem().legend.items]
    assert "validation" in names and "loss" in names
    assert not tab.run_view.overfit_banner.isVisibleTo(tab)  # no alert came


def test_overfitting_shows_the_banner_and_its_button_emits_the_best_step(qtbot, settings,
                                                                         dataset_dir):
    tab = make_tab(qtbot, settings, dataset_dir, validating_training(overfit=True))
    view = tab.run_view
    assert not view.overfit_banner.isVisibleTo(tab)
    with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS):
        assert tab.start_training()
    assert tab.run.overfitting is not None and tab.run.overfitting.best_step == 20
    assert view.overfit_banner.isVisibleTo(tab)  # kept after the run ended
    assert OVERFIT.message in view.overfit_banner.text()
    assert OVERFIT.advice in view.overfit_banner.text()
    assert view.compare_step_button.text() == "Compare checkpoints at step 20"
    with qtbot.waitSignal(view.compare_requested_at, timeout=TIMEOUT_MS) as asked:
        click(qtbot, view.compare_step_button)
    assert asked.args == [20]
    assert tab.run.run_folder == tab.run.config.output_dir

    with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS):
        assert tab.start_training()  # a new run starts without the old alert
        assert not view.overfit_banner.isVisibleTo(tab) and tab.run.overfitting is None
    assert view.overfit_banner.isVisibleTo(tab)  # ... until its own


def start_diverging(qtbot, tab):
    tab.form.steps_spin.setValue(20)
    tab.start_training()
    qtbot.waitUntil(lambda: tab.run.state is RunState.PAUSED, timeout=TIMEOUT_MS)
    banner = tab.run_view.diverged_banner
    assert banner.isVisibleTo(tab) and "the loss became nan" in banner.text()
    assert "Lower train.learning_rate." in banner.text() and "star.safetensors" in banner.text()
    assert [b.text() for b in banner.buttons] == ["Lower the learning rate and continue", "Stop"]
    assert not tab.run_view.overfit_banner.isVisibleTo(tab)
    return banner


def test_lower_the_learning_rate_and_continue_resumes_at_half_the_rate(qtbot, settings,
                                                                      dataset_dir, tmp_path):
    seen: dict = {}
    tab = make_tab(qtbot, settings, dataset_dir, diverging_training(tmp_path, seen))
    with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS) as done:
        banner = start_diverging(qtbot, tab)
        click(qtbot, tab.run_view.lower_lr_button)
        assert not banner.isVisibleTo(tab)  # gone at once
    assert isinstance(done.args[0], ev.Finished) and seen["scale"] == 0.5
    assert tab.run.state is RunState.FINISHED and not banner.isVisibleTo(tab)


def test_stop_ends_a_diverged_run_cancelled(qtbot, settings, dataset_dir, tmp_path):
    seen: dict = {}
    tab = make_tab(qtbot, settings, dataset_dir, diverging_training(tmp_path, seen))
    with qtbot.waitSignal(tab._runner.finished, timeout=TIMEOUT_MS) as done:
        banner = start_diverging(qtbot, tab)
        click(qtbot, tab.run_view.stop_button)
        assert not banner.isVisibleTo(tab) and tab.run.state is RunState.CANCELLING
    assert isinstance(done.args[0], ev.Cancelled) and seen["scale"] is None
    assert tab.run.state is RunState.CANCELLED and not banner.isVisibleTo(tab)
