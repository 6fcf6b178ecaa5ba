"""Train tab: a run's events drive the progress bar, loss curve and log; failures show why."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from lora_studio.core import events as ev
from lora_studio.core.errors import ModelLoadError
from lora_studio.ui.widgets.error_dialog import ErrorDialog


def fake_training(config):
    def job(emit, control):
        emit(ev.JobStarted(kind="train", total_steps=config.train.steps))
        for step in range(1, config.train.steps + 1):
            emit(ev.StepProgress(step=step, total_steps=config.train.steps, loss=1.0 / step,
                                 lr=1e-4, it_per_s=5.0, eta_s=1.0))
        emit(ev.Finished(message="Training finished: LoRA saved."))

    return job


def failing_training(config):
    def job(emit, control):
        raise ModelLoadError("The base model file is not a Stable Diffusion checkpoint.",
                             "Choose a .safetensors SD 1.x, 2.x or SDXL checkpoint.")

    return job


def open_dataset(window, dataset_dir, wait_for_dataset):
    window.open_paths([dataset_dir])
    wait_for_dataset(window, rows=4)


def test_training_run_updates_progress_loss_and_status(make_window, dataset_dir,
                                                       wait_for_dataset, qtbot):
    window = make_window()
    tab = window.train_tab
    assert not tab.start_button.isEnabled()  # no dataset yet
    open_dataset(window, dataset_dir, wait_for_dataset)
    assert tab.start_button.isEnabled()
    tab._job_factory = fake_training
    tab.steps_spin.setValue(8)
    with qtbot.waitSignal(window.runner.finished, timeout=5000):
        qtbot.mouseClick(tab.start_button, Qt.LeftButton)
    assert tab.progress.value() == 8
    assert tab.loss_plot.steps == list(range(1, 9))
    assert "Training finished" in tab.log_view.toPlainText()
    assert window.status.job_label.text() == "Idle · training finished"
    assert tab.start_button.isEnabled() and not tab.cancel_button.isEnabled()


def test_failed_training_opens_an_error_with_details(make_window, dataset_dir,
                                                     wait_for_dataset, qtbot):
    window = make_window()
    window.show()
    open_dataset(window, dataset_dir, wait_for_dataset)
    window.train_tab._job_factory = failing_training
    with qtbot.waitSignal(window.runner.finished, timeout=5000):
        window.train_tab.start_training()
    dialogs = [w for w in QApplication.topLevelWidgets()
               if isinstance(w, ErrorDialog) and w.isVisible()]
    assert dialogs, "a failed run must tell the user why"
    assert "not a Stable Diffusion checkpoint" in dialogs[-1].message_label.text()
    assert "ModelLoadError" in dialogs[-1].details_view.toPlainText()
    for dialog in dialogs:
        dialog.close()


def test_config_from_the_form_points_at_the_dataset(make_window, dataset_dir,
                                                    wait_for_dataset):
    window = make_window()
    open_dataset(window, dataset_dir, wait_for_dataset)
    window.train_tab.rank_spin.setValue(8)
    config = window.train_tab.build_config()
    assert config.dataset.path == str(dataset_dir)
    assert config.lora.rank == 8
