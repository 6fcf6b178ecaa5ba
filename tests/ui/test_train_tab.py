"""Train tab with scripted jobs: the form (defaults, tooltips, presets, invalid settings) and how a
run's events drive the progress, loss curve, previews and error messages. The real trainer runs
in test_train_tab_real.py."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from lora_studio.core import events as ev
from lora_studio.core.errors import ModelLoadError
from lora_studio.core.train.config import describe_keys, load_config
from lora_studio.ui.tabs.train_tab import TrainTab
from lora_studio.ui.widgets.error_dialog import ErrorDialog
from lora_studio.ui.widgets.train_form import default_config
from lora_studio.ui.workers import JobRunner


def fake_training(config):
    def job(emit, control):
        emit(ev.JobStarted(kind="train", total_steps=config.train.steps))
        for step in range(1, config.train.steps + 1):
            emit(ev.StepProgress(step=step, total_steps=config.train.steps, loss=1.0 / step,
                                 lr=1e-4, it_per_s=5.0, eta_s=1.0))
            if step % 2 == 0:
                emit(ev.Preview(step=step, prompt="zqstar", image=Image.new("RGB", (32, 32))))
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


def visible_error_dialogs() -> list[ErrorDialog]:
    return [w for w in QApplication.topLevelWidgets()
            if isinstance(w, ErrorDialog) and w.isVisible()]


def close_dialogs() -> None:
    for dialog in visible_error_dialogs():
        dialog.close()


def make_tab(qtbot, settings) -> TrainTab:
    runner = JobRunner()
    tab = TrainTab(runner, settings)
    tab._test_runner = runner  # keep the runner alive as long as the tab
    qtbot.addWidget(tab)
    return tab


def test_training_run_updates_progress_loss_previews_and_status(make_window, dataset_dir,
                                                                wait_for_dataset, qtbot):
    window = make_window()
    tab = window.train_tab
    assert not tab.start_button.isEnabled()  # no dataset yet
    open_dataset(window, dataset_dir, wait_for_dataset)
    assert tab.start_button.isEnabled()
    tab._job_factory = fake_training
    tab.form.steps_spin.setValue(8)
    with qtbot.waitSignal(window.runner.finished, timeout=5000):
        qtbot.mouseClick(tab.start_button, Qt.LeftButton)
    assert tab.progress.value() == 8
    assert tab.step_label.text() == "step 8 / 8"
    assert tab.loss_plot.steps == list(range(1, 9))
    assert tab.loss_plot.curve_data()[0] == list(range(1, 9))  # drawn by the end of the run
    assert tab.loss_plot.redraws <= 2  # 8 points in a burst: one throttled redraw, not eight
    assert [t.caption_label.text() for t in tab.preview_strip.tiles()] == [
        "step 8", "step 6", "step 4", "step 2"]  # every preview kept, newest first
    assert "Training finished" in tab.log_view.toPlainText()
    assert window.status.job_label.text() == "Idle · training finished"
    assert tab.start_button.isEnabled() and not tab.cancel_button.isEnabled()
    assert tab.form.steps_spin.isEnabled()  # the form is unlocked again


def test_failed_training_opens_an_error_with_details(make_window, dataset_dir,
                                                     wait_for_dataset, qtbot):
    window = make_window()
    window.show()
    open_dataset(window, dataset_dir, wait_for_dataset)
    window.train_tab._job_factory = failing_training
    with qtbot.waitSignal(window.runner.finished, timeout=5000):
        window.train_tab.start_training()
    dialogs = visible_error_dialogs()
    assert dialogs, "a failed run must tell the user why"
    assert "not a Stable Diffusion checkpoint" in dialogs[-1].message_label.text()
    assert "ModelLoadError" in dialogs[-1].details_view.toPlainText()
    assert not dialogs[-1].details_visible  # the traceback stays behind "Details"
    close_dialogs()


def test_config_from_the_form_points_at_the_dataset(make_window, dataset_dir,
                                                    wait_for_dataset):
    window = make_window()
    open_dataset(window, dataset_dir, wait_for_dataset)
    window.train_tab.form.rank_spin.setValue(4)
    config = window.train_tab.build_config()
    assert config.dataset.path == str(dataset_dir)
    assert config.lora.rank == 4 and config.lora.alpha == 4.0  # alpha followed rank


def test_defaults_are_the_quickstart_settings_with_the_trigger_word_as_prompt(qtbot, settings,
                                                                             dataset_dir):
    tab = make_tab(qtbot, settings)
    tab.set_dataset(dataset_dir, "zqstar")
    cfg = tab.build_config()
    assert (cfg.train.steps, cfg.lora.rank, cfg.train.learning_rate, cfg.dataset.resolution,
            cfg.sample.every) == (1500, 8, 1e-3, 64, 250)
    assert cfg.sample.prompts == ["zqstar"]
    assert cfg.model.base == ""  # the built-in tiny model
    assert cfg.output.format == "kohya" and cfg.lora.targets == "attention+mlp+conv"
    assert cfg.lora.train_text_encoder and cfg.train.batch_size == 4
    assert Path(cfg.output.path).name == cfg.output.name  # one folder per LoRA by default
    # A new trigger word replaces the prompt the form filled in, never the user's own.
    tab.set_dataset(dataset_dir, "blorp")
    assert tab.form.prompts() == ["blorp"]
    tab.form.prompts_edit.setPlainText("my own prompt")
    tab.set_dataset(dataset_dir, "zqstar")
    assert tab.form.prompts() == ["my own prompt"]


def test_every_setting_has_the_engine_help_as_tooltip(qtbot, settings):
    tab = make_tab(qtbot, settings)
    help_text = describe_keys()
    form = tab.form
    widgets = {"lora.rank": form.rank_spin, "lora.alpha": form.alpha_spin,
               "train.steps": form.steps_spin, "train.learning_rate": form.lr_edit,
               "train.batch_size": form.batch_spin, "dataset.resolution": form.resolution_spin,
               "train.lr_scheduler": form.scheduler_combo,
               "train.mixed_precision": form.precision_combo,
               "train.preserve_base": form.preserve_spin,
               "dataset.reg_path": form.reg_edit, "dataset.random_flip": form.flip_check,
               "train.prior_loss_weight": form.prior_spin,
               "lora.targets": form.targets_combo,
               "lora.train_text_encoder": form.text_encoder_check,
               "sample.prompts": form.prompts_edit, "sample.every": form.sample_every_spin,
               "output.path": form.output_edit, "output.name": form.name_edit,
               "output.format": form.format_combo, "model.base": form.base_label}
    for key, widget in widgets.items():
        assert help_text[key] in widget.toolTip(), key


def test_presets_round_trip_through_toml(qtbot, settings, dataset_dir, tmp_path):
    tab = make_tab(qtbot, settings)
    tab.set_dataset(dataset_dir, "zqstar")
    form = tab.form
    form.rank_spin.setValue(12)
    form.alpha_spin.setValue(6.0)
    form.lr_edit.setText("3e-4")
    form.steps_spin.setValue(321)
    form.batch_spin.setValue(3)
    form.resolution_spin.setValue(128)
    form.scheduler_combo.setCurrentIndex(form.scheduler_combo.findData("cosine"))
    form.precision_combo.setCurrentIndex(form.precision_combo.findData("bf16"))
    form.targets_combo.setCurrentIndex(form.targets_combo.findData("attention"))
    form.text_encoder_check.setChecked(True)
    form.preserve_spin.setValue(1.5)
    (tmp_path / "reg").mkdir()
    form.reg_edit.setText(str(tmp_path / "reg"))
    form.prior_spin.setValue(0.75)
    form.flip_check.setChecked(False)  # the quickstart mirrors its stars
    form.sample_every_spin.setValue(7)
    form.prompts_edit.setPlainText("zqstar\na photo of zqstar")
    form.output_edit.setText(str(tmp_path / "out"))
    form.name_edit.setText("star")
    form.format_combo.setCurrentIndex(form.format_combo.findData("diffusers"))
    before = tab.build_config().to_dict()

    path = tab.save_preset(tmp_path / "star.toml")
    assert load_config(path).to_dict() == before  # the CLI reads it the same way
    form.set_config(default_config())  # forget everything
    assert form.rank_spin.value() == 8
    tab.load_preset(path)
    assert tab.build_config().to_dict() == before
    assert form.lr_edit.text() == "0.0003" and form.format_combo.currentData() == "diffusers"
    assert before["train"]["preserve_base"] == 1.5
    assert before["dataset"]["reg_path"] == str(tmp_path / "reg")
    assert before["train"]["prior_loss_weight"] == 0.75
    assert before["dataset"]["random_flip"] is False


def test_a_preset_keeps_the_open_dataset_and_unknown_targets(qtbot, settings, dataset_dir,
                                                             tmp_path):
    preset = tmp_path / "custom.toml"
    preset.write_text('schema_version = 1\n[lora]\nrank = 2\ntargets = ["to_q", "to_v"]\n'
                      '[train]\nsteps = 5\n', encoding="utf-8")
    tab = make_tab(qtbot, settings)
    tab.set_dataset(dataset_dir, "zqstar")
    tab.load_preset(preset)
    cfg = tab.build_config()
    assert cfg.dataset.path == str(dataset_dir) and cfg.lora.targets == ["to_q", "to_v"]
    assert cfg.train.steps == 5 and cfg.lora.rank == 2


def test_a_missing_dataset_folder_is_a_message_naming_the_field(qtbot, settings, tmp_path):
    tab = make_tab(qtbot, settings)
    tab.show()
    tab.set_dataset(tmp_path / "gone", "zqstar")
    assert tab.start_button.isEnabled()
    qtbot.mouseClick(tab.start_button, Qt.LeftButton)
    dialogs = visible_error_dialogs()
    assert dialogs and not tab._runner.is_running
    text = dialogs[-1].message_label.text()
    assert "“Dataset”" in text and "does not exist" in text and "Traceback" not in text
    assert not dialogs[-1].details_button.isVisible()  # a setting, not a crash: no traceback
    close_dialogs()


def test_an_invalid_learning_rate_names_the_field(qtbot, settings, dataset_dir):
    tab = make_tab(qtbot, settings)
    tab.show()
    tab.set_dataset(dataset_dir, "zqstar")
    for text, expected in (("fast", "must be a number"), ("0", "must be > 0")):
        tab.form.lr_edit.setText(text)
        assert not tab.start_training()
        message = visible_error_dialogs()[-1].message_label.text()
        assert "“Learning rate”" in message and "train.learning_rate" in message
        assert expected in message
        close_dialogs()


def test_the_last_settings_come_back_in_a_new_tab(qtbot, settings, dataset_dir):
    tab = make_tab(qtbot, settings)
    tab._job_factory = fake_training
    tab.set_dataset(dataset_dir, "zqstar")
    tab.form.steps_spin.setValue(6)
    tab.form.rank_spin.setValue(16)
    with qtbot.waitSignal(tab._runner.finished, timeout=5000):
        assert tab.start_training()
    again = make_tab(qtbot, settings)
    assert again.form.steps_spin.value() == 6 and again.form.rank_spin.value() == 16
    assert again.form.dataset_path == ""  # the dataset comes from the Dataset tab
    assert again.form.output_edit.text() == ""  # the automatic output folder stays automatic


def test_before_a_run_the_progress_bar_counts_the_forms_steps(qtbot, settings):
    tab = make_tab(qtbot, settings)
    assert tab.progress.maximum() == tab.form.steps_spin.value() == 1500
    tab.form.steps_spin.setValue(321)
    assert (tab.progress.value(), tab.progress.maximum()) == (0, 321)
    assert tab.progress.text() == "0 / 321 steps"


def test_the_shipped_sample_trains_beside_its_reg_pictures_and_no_other_dataset_does(
        qtbot, settings, dataset_dir, tmp_path):
    from lora_studio.core.paths import sample_dataset_dir, sample_reg_dir

    tab = make_tab(qtbot, settings)
    form = tab.form
    sample, shipped_reg = sample_dataset_dir(), sample_reg_dir()
    assert form.reg_edit.text() == ""  # no dataset yet: nothing of the sample's
    form.set_dataset(sample, "zqstar")
    cfg = tab.build_config()
    assert Path(cfg.dataset.reg_path).resolve() == shipped_reg.resolve()
    assert (cfg.train.min_timestep, cfg.train.max_timestep) == (200, 700)
    assert cfg.train.prior_loss_weight == 3.0
    cfg.validate()  # the shipped reg folder is there and the recipe is a valid config

    form.set_dataset(dataset_dir, "zqstar")  # a person's own pictures: engine defaults
    cfg = tab.build_config()
    assert form.reg_edit.text() == "" and cfg.dataset.reg_path == ""
    assert (cfg.train.min_timestep, cfg.train.max_timestep) == (0, 1000)
    assert cfg.train.prior_loss_weight == 1.0  # kohya's, for a reg folder of their own

    form.prior_spin.setValue(2.0)  # a weight the person chose stays, on any dataset
    form.set_dataset(sample, "zqstar")
    assert tab.build_config().train.prior_loss_weight == 2.0
    form.set_dataset(dataset_dir, "zqstar")
    assert tab.build_config().train.prior_loss_weight == 2.0

    own = tmp_path / "my_reg"
    own.mkdir()
    form.reg_edit.setText(str(own))  # a reg folder the person chose stays, on any dataset
    form.set_dataset(sample, "zqstar")
    assert form.reg_edit.text() == str(own)
    form.set_dataset(dataset_dir, "zqstar")
    assert form.reg_edit.text() == str(own)

    form.reg_edit.setText("")
    preset = tmp_path / "range.toml"  # a preset's own timestep range is not replaced
    preset.write_text("schema_version = 1\n[train]\nmin_timestep = 100\nmax_timestep = 900\n",
                      encoding="utf-8")
    tab.load_preset(preset)
    form.set_dataset(sample, "zqstar")
    cfg = tab.build_config()
    assert (cfg.train.min_timestep, cfg.train.max_timestep) == (100, 900)
