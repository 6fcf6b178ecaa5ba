"""The Train form is generated from TrainConfig's fields: every field has a widget (or a reason
not to), its tooltip and label come from config.py; the advanced settings wait behind an
expander; defaults follow the base model's architecture while what the person typed stays; the
Dataset tab's folders train as [[dataset.subsets]]; the plan above Start shows the buckets and
the epoch arithmetic. Scripted jobs only: no torch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QPlainTextEdit
from PySide6.QtWidgets import QSpinBox

from lora_studio.core import events as ev
from lora_studio.core.dataset.checks import check_dataset
from lora_studio.core.dataset.scan import DatasetItem, DatasetReport, SubsetSummary
from lora_studio.core.errors import ConfigError
from lora_studio.core.train.config import SECTIONS, describe_keys
from lora_studio.ui.tabs.train_tab import TrainTab
from lora_studio.ui.widgets.config_fields import FieldSpec, make_editor
from lora_studio.ui.widgets.train_form import NOT_IN_FORM, TINY_MODEL_LABEL, TrainForm
from lora_studio.ui.workers import JobRunner

SD15 = "/models/sd15.safetensors"
SDXL = "/models/sdxl.safetensors"


def config_keys() -> list[str]:
    return ["schema_version"] + [f"{section}.{f.name}" for section, cls in SECTIONS.items()
                                 for f in dataclasses.fields(cls)]


@pytest.fixture
def form(qtbot) -> TrainForm:
    form = TrainForm()
    qtbot.addWidget(form)
    return form


def make_tab(qtbot, settings) -> TrainTab:
    runner = JobRunner()
    tab = TrainTab(runner, settings)
    tab._test_runner = runner
    qtbot.addWidget(tab)
    return tab


def quick_job(config):
    def job(emit, control):
        emit(ev.Finished(message="Training finished: LoRA saved."))

    return job


def image_folder(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (40 * i % 255, 90, 160)).save(folder / f"img_{i}.png")
        (folder / f"img_{i}.txt").write_text(f"zqstar, picture {i}", encoding="utf-8")
    return folder


# ---------------------------------------------------------------------- generated from config.py
def test_every_config_field_has_a_widget_or_a_reason_and_its_help_as_tooltip(form):
    assert len(NOT_IN_FORM) <= 8 and all(NOT_IN_FORM.values())
    for key in config_keys():
        assert (key in form.editors) != (key in NOT_IN_FORM), key
    help_text = describe_keys()
    for key, editor in form.editors.items():
        tip = editor.input.toolTip()
        assert help_text[key] in tip and f"[{key}]" in tip, key


def test_each_widget_follows_the_fields_type_and_metadata(form):
    kinds = {"dataset.enable_bucket": QCheckBox, "train.steps": QSpinBox,
             "lora.alpha": QDoubleSpinBox, "train.learning_rate": QLineEdit,
             "lora.text_encoder_lr": QLineEdit, "train.mixed_precision": QComboBox,
             "dataset.max_token_length": QComboBox, "dataset.reg_path": QLineEdit,
             "sample.prompts": QPlainTextEdit, "dataset.caption_prefix": QLineEdit}
    for key, kind in kinds.items():
        assert isinstance(form.editors[key].input, kind), key
    tokens = form.editors["dataset.max_token_length"].input
    assert [tokens.itemData(i) for i in range(tokens.count())] == [75, 150, 225]
    for key, special in (("dataset.min_bucket_reso", "auto"), ("dataset.max_bucket_reso", "auto"),
                         ("train.max_train_epochs", "off"), ("output.save_every_n_epochs", "off")):
        spin = form.editors[key].input
        assert spin.minimum() == 0 and spin.specialValueText() == special, key
    assert form.label_for("train.learning_rate") == "Learning rate"
    assert form.label_for("dataset.subsets[2].path") == "Dataset folders"
    # a field added to config.py later gets an editor from its metadata alone
    editor = make_editor(FieldSpec(key="train.new_knob", default=3, help="A new knob.",
                                   label="New knob", minimum=1, maximum=9, special="off"))
    assert isinstance(editor.input, QSpinBox) and editor.input.maximum() == 9
    assert editor.input.toolTip() == "A new knob.\n[train.new_knob]"


def test_advanced_settings_start_closed_and_open_for_a_setting_in_them(form):
    form.show()
    advanced = form.editors["dataset.min_bucket_reso"].input
    assert not form.advanced.is_open and not advanced.isVisible()
    assert form.steps_spin.isVisible() and form.resolution_spin.isVisible()
    form.focus_field("dataset.min_bucket_reso")  # e.g. a message named it
    assert form.advanced.is_open and advanced.isVisible()


def test_the_new_dataset_settings_reach_the_config_and_come_back(qtbot, form):
    ed = form.editors
    ed["dataset.enable_bucket"].input.setChecked(False)
    ed["dataset.min_bucket_reso"].input.setValue(256)
    ed["dataset.max_bucket_reso"].input.setValue(1024)
    ed["dataset.bucket_reso_steps"].input.setValue(32)
    ed["dataset.bucket_no_upscale"].input.setChecked(True)
    ed["dataset.shuffle_caption"].input.setChecked(True)
    ed["dataset.keep_tokens"].input.setValue(1)
    ed["dataset.keep_tokens_separator"].input.setText("|||")
    ed["dataset.caption_dropout_rate"].input.setValue(0.1)
    ed["dataset.caption_tag_dropout_rate"].input.setValue(0.2)
    ed["dataset.caption_prefix"].input.setText("photo of")
    ed["dataset.caption_suffix"].input.setText("high quality")
    tokens = ed["dataset.max_token_length"].input
    tokens.setCurrentIndex(tokens.findData(150))
    ed["train.max_train_epochs"].input.setValue(3)
    ed["output.save_every_n_epochs"].input.setValue(2)
    cfg = form.to_config()
    d = cfg.dataset
    assert (d.enable_bucket, d.min_bucket_reso, d.max_bucket_reso, d.bucket_reso_steps,
            d.bucket_no_upscale) == (False, 256, 1024, 32, True)
    assert (d.shuffle_caption, d.keep_tokens, d.keep_tokens_separator, d.caption_prefix,
            d.caption_suffix, d.max_token_length) == (True, 1, "|||", "photo of",
                                                      "high quality", 150)
    assert (d.caption_dropout_rate, d.caption_tag_dropout_rate) == (0.1, 0.2)
    assert cfg.train.max_train_epochs == 3 and cfg.output.save_every_n_epochs == 2
    again = TrainForm()
    qtbot.addWidget(again)
    again.set_config(cfg)
    assert again.to_config().to_dict() == cfg.to_dict()


def test_a_learning_rate_is_typed_and_a_bad_one_names_its_key(form):
    te = form.editors["lora.text_encoder_lr"].input
    te.setText("")
    assert form.to_config().lora.text_encoder_lr == 0.0  # "same as LR"
    te.setText("5e-5")
    assert form.to_config().lora.text_encoder_lr == 5e-5
    te.setText("fast")
    with pytest.raises(ConfigError) as info:
        form.to_config()
    assert info.value.key == "lora.text_encoder_lr" and "fast" in str(info.value)
    assert form.to_config(strict=False).lora.text_encoder_lr == 0.0  # the base config's


# ---------------------------------------------------------------------- architecture defaults
def test_defaults_follow_the_architecture_and_a_typed_value_stays(form):
    assert form.resolution_spin.value() == 64  # the built-in model: the quickstart recipe
    form.set_cuda(True)  # as the device probe says on a CUDA machine
    form.set_base_model(SD15, "sd15", "sd1")
    cfg = form.to_config()
    assert (cfg.dataset.resolution, cfg.train.learning_rate, cfg.lora.rank, cfg.lora.alpha,
            cfg.train.batch_size, cfg.train.mixed_precision, cfg.train.steps) == (
        512, 1e-4, 16, 8.0, 1, "fp16", 1600)
    assert cfg.model.base == SD15
    form.set_base_model(SDXL, "sdxl", "sdxl")
    assert (form.resolution_spin.value(), form.rank_spin.value()) == (1024, 32)
    assert form.to_config().train.mixed_precision == "bf16"
    form.set_cuda(False)  # no CUDA GPU: fp32, the only precision the CPU trains in
    assert form.to_config().train.mixed_precision == "no"
    form.set_cuda(True)
    form.resolution_spin.setValue(896)  # the person's choice
    form.set_base_model("/models/sd21", "sd21", "sd2-v")
    assert form.resolution_spin.value() == 896 and form.rank_spin.value() == 16
    form.set_base_model("/models/other", "other")  # architecture not known yet: no change
    assert form.rank_spin.value() == 16
    form.set_base_model(None, TINY_MODEL_LABEL)
    cfg = form.to_config()
    assert (cfg.dataset.resolution, cfg.train.learning_rate, cfg.lora.rank) == (896, 1e-3, 8)


def test_alpha_keeps_its_ratio_to_the_rank_until_the_person_sets_it(form):
    form.set_base_model(SD15, "sd15", "sd1")  # 16 / 8
    form.rank_spin.setValue(32)
    assert form.alpha_spin.value() == 16.0
    form.alpha_spin.setValue(5.0)
    form.rank_spin.setValue(8)
    assert form.alpha_spin.value() == 5.0
    form.set_base_model(SDXL, "sdxl", "sdxl")  # both the person's: both stay
    assert (form.rank_spin.value(), form.alpha_spin.value()) == (8, 5.0)


def test_the_tab_learns_the_architecture_and_remembers_what_was_typed(qtbot, settings,
                                                                     dataset_dir):
    tab = make_tab(qtbot, settings)
    tab._job_factory = quick_job
    tab.set_dataset(dataset_dir, "zqstar")
    tab.set_base_model(SD15, "sd15", arch="sd1")
    tab.form.steps_spin.setValue(6)
    cfg = tab.build_config()
    assert (cfg.dataset.resolution, cfg.train.steps, cfg.model.base) == (512, 6, SD15)
    with qtbot.waitSignal(tab._runner.finished, timeout=5000):
        assert tab.start_training()
    again = make_tab(qtbot, settings)
    assert (again.form.steps_spin.value(), again.form.resolution_spin.value()) == (6, 512)
    again.set_base_model(SDXL, "sdxl", arch="sdxl")
    assert (again.form.steps_spin.value(), again.form.resolution_spin.value()) == (6, 1024)


# ---------------------------------------------------------------------- dataset and plan
def test_folders_from_the_dataset_tab_train_as_subsets(qtbot, settings, tmp_path):
    root = tmp_path / "train"
    tables = []
    for n, (name, count) in enumerate((("a", 1), ("b", 2), ("c", 2)), start=1):
        image_folder(root / name, [(64, 64)] * count)
        tables.append({"path": str(root / name), "repeats": n * 2, "default_caption": name})
    report = check_dataset(subsets=tables, min_size=8)
    assert report.layout == "subsets"
    tab = make_tab(qtbot, settings)
    tab.set_report(report)
    assert tab.dataset_label.text() == "train: 3 folders, 5 images, 22 per epoch"
    cfg = tab.build_config()
    assert cfg.dataset.path == "" and cfg.dataset.subsets == tables
    report.subsets[1].repeats = 7  # edited in the Dataset tab
    tab.set_report(report)
    assert tab.build_config().dataset.subsets[1]["repeats"] == 7
    assert "28 images per epoch" in tab.plan_view.text()  # 1 x 2 + 2 x 7 + 2 x 6

    kohya = tmp_path / "kohya"
    image_folder(kohya / "3_star", [(64, 64)] * 2)
    tab.set_report(check_dataset(kohya, min_size=8))
    cfg = tab.build_config()
    assert cfg.dataset.path == str(kohya) and cfg.dataset.subsets == []


def test_the_plan_shows_three_buckets_and_steps_per_epoch_follow_the_batch_size(
        qtbot, settings, tmp_path):
    folder = image_folder(tmp_path / "mixed", [(512, 512)] * 4 + [(768, 512)] * 2
                          + [(512, 768)] * 2)
    tab = make_tab(qtbot, settings)
    tab.form.resolution_spin.setValue(512)
    tab.form.batch_spin.setValue(1)
    tab.set_report(check_dataset(folder, min_size=8))
    rows = [line for line in tab.plan_view.lines if line.strip().endswith("per epoch")
            and line.startswith("  ")]
    assert len(rows) == 3, tab.plan_view.text()
    assert "8 batches = 8 steps per epoch" in tab.plan_view.text()
    tab.form.batch_spin.setValue(2)
    assert "4 batches = 4 steps per epoch" in tab.plan_view.text()
    tab.form.batch_spin.setValue(4)  # the 2-image buckets cannot fill a batch
    assert "fewer than the batch size 4" in tab.plan_view.text()
    tab.form.editors["train.max_train_epochs"].input.setValue(5)
    assert tab.plan.total_steps == 5 * tab.plan.steps_per_epoch
    assert tab.progress.maximum() == tab.plan.total_steps  # the bar counts the real run
    tab.form.editors["dataset.min_bucket_reso"].input.setValue(640)  # above the resolution
    assert "Smallest side" in tab.plan_view.text()


def test_a_large_dataset_is_planned_in_the_background(qtbot, settings):
    items = [DatasetItem(Path(f"/nowhere/{i}.png"), "zqstar", None, size=(512 + i % 3 * 256,
                                                                          512)) for i in range(900)]
    report = DatasetReport(Path("/nowhere"), items, [], [],
                           subsets=[SubsetSummary(Path("/nowhere"), 1, ".txt", "", "", 900)])
    tab = make_tab(qtbot, settings)
    tab.form.resolution_spin.setValue(512)
    tab.set_report(report)
    qtbot.waitUntil(lambda: tab.plan is not None, timeout=10_000)
    assert "900 images per epoch" in tab.plan_view.text()
    assert tab.plan.steps_per_epoch > 0


def test_the_base_model_choice_says_its_architecture(qtbot, tiny_model_dir, tiny_vpred_model_dir,
                                                      tmp_path):
    from lora_studio.ui.base_model import BaseModelChoice

    choice = BaseModelChoice()
    for spec, arch in ((tiny_vpred_model_dir, "sd2-v"), (tiny_model_dir, "sd1"),
                       (tmp_path / "missing.safetensors", None)):
        with qtbot.waitSignal(choice.described, timeout=15_000):
            choice.set_spec(spec)
            assert choice.arch is None  # until it has been worked out
        assert choice.arch == arch, spec
    choice.shutdown()


def test_the_advice_follows_the_dataset_and_base_and_apply_sets_the_form(qtbot, settings,
                                                                        tmp_path):
    """The advice panel under the form: the open dataset's images (with repeats) and the base
    model's family; Apply makes its values the person's own settings."""
    kohya = tmp_path / "kohya"
    image_folder(kohya / "3_star", [(64, 64)] * 40)
    tab = make_tab(qtbot, settings)
    panel = tab.advice_panel
    assert panel.advice is None  # no dataset yet
    tab.set_report(check_dataset(kohya, min_size=8))
    tab.set_base_model(SDXL, "sdxl", arch="sdxl")
    tab.form.rank_spin.setValue(32)
    panel.set_concept("subject")
    advice = panel.advice
    assert advice.images == 40 and advice.images_per_epoch == 120 and advice.arch == "sdxl"
    assert "Rank 32 → 8" in panel.shown_text()
    panel.apply_requested.emit(dict(advice.values))
    cfg = tab.build_config()
    assert (cfg.lora.rank, cfg.lora.alpha) == (advice.values["lora.rank"],
                                              advice.values["lora.alpha"])
    assert cfg.train.steps == advice.values["train.steps"]
    assert "lora.rank" in tab.form.edited_keys  # kept when the base model changes
    assert "→" not in panel.values_label.text()  # the settings now match the advice


def test_the_memory_estimate_above_start_follows_the_settings(qtbot, settings, tmp_path):
    """Estimated off the GUI thread for the planned buckets and the base model's family; a
    setting that lowers memory lowers it; above the GPU's memory it turns red."""
    from lora_studio.core.train.memory import estimate_memory
    from lora_studio.core.warmup import import_engine

    import_engine()  # as the app's warm-up does: estimates wait for it
    folder = image_folder(tmp_path / "data", [(64, 64)] * 3)
    tab = make_tab(qtbot, settings)
    tab.set_base_model(SDXL, "sdxl", arch="sdxl")
    tab.set_report(check_dataset(folder, min_size=8))
    tab.form.apply_values({"train.gradient_checkpointing": False})
    qtbot.wait(600)
    assert tab.memory_view.estimate is None  # a hidden tab keeps its request until it shows
    tab.show()
    assert tab.memory.wait()
    shown = tab.memory_view.estimate
    assert shown is not None and shown.arch == "sdxl" and tab.memory_view.isVisibleTo(tab)
    assert tab.memory_view.text().startswith("Estimated GPU memory")
    expected = estimate_memory(tab.form.to_config(strict=False), "sdxl",
                               [fit.bucket for fit in tab.plan.fits])
    assert shown.total == expected.total
    tab.form.apply_values({"train.gradient_checkpointing": True})
    assert tab.memory.wait()
    assert tab.memory_view.estimate.total < shown.total
    tab.memory_view.set_vram_gb(4)
    assert tab.memory_view.level == "over" and "more than this GPU" in tab.memory_view.text()
