"""The rank and steps advice panel: what it advises for the dataset and concept, the current
values beside the advised ones, Apply emitting the values, and nothing clipped."""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from lora_studio.core.train.config import TrainConfig
from lora_studio.core.train.presets import apply_defaults
from lora_studio.ui.widgets.train_advice import NO_DATASET, TrainAdvicePanel


def make_panel(qtbot) -> TrainAdvicePanel:
    panel = TrainAdvicePanel()
    qtbot.addWidget(panel)
    return panel


def settings(arch: str = "sd1") -> TrainConfig:
    cfg = apply_defaults(TrainConfig(), arch)
    cfg.dataset.path = "/data/stars"
    return cfg


def test_without_images_there_is_no_advice_to_apply(qtbot):
    panel = make_panel(qtbot)
    assert panel.shown_text().strip() == NO_DATASET
    assert not panel.apply_button.isEnabled() and panel.advice is None
    panel.set_dataset(0, "sdxl")
    assert not panel.apply_button.isEnabled()


def test_style_advice_for_40_images_and_apply_emits_the_values(qtbot):
    panel = make_panel(qtbot)
    panel.set_concept("style")
    panel.set_dataset(40, "sd1")

    text = panel.shown_text()
    assert text.startswith("Rank 4   Alpha 4   Steps 4000\n")
    assert "• Style: rank 4-8, the low end under 200 images" in text
    assert "About 100 views of each image → 40 x 100 = 4000 images seen [dreambooth-ext]" in text
    assert text.count("• ") == len(panel.advice.reasons) == 8
    with qtbot.waitSignal(panel.apply_requested, timeout=1000) as signal:
        panel.apply_button.click()
    values = signal.args[0]
    assert values == {"lora.rank": 4, "lora.alpha": 4.0, "train.steps": 4000,
                      "train.max_train_epochs": 0}
    applied = panel.advice.apply(settings())
    applied.validate()
    assert (applied.lora.rank, applied.lora.alpha, applied.train.steps) == (4, 4.0, 4000)


def test_current_values_show_beside_the_advice_until_applied(qtbot):
    panel = make_panel(qtbot)
    current = settings("sdxl")  # rank 32, alpha 16, 1600 steps
    panel.set_current(current)
    panel.set_dataset(25, "sdxl", images_per_epoch=250)  # a 10_name kohya folder
    panel.set_concept("subject")

    text = panel.shown_text()
    assert text.startswith("Rank 32 → 8   Alpha 16 → 8   Steps 1600 → 2500\n")
    assert "SDXL: not raised" in text and "2500 images seen = 10.0 epochs of 250 images" in text
    assert "now 0.5: at the same learning rate, updates 2x as large" in text
    assert panel.apply_button.isEnabled()

    panel.set_current(panel.advice.apply(current))  # what the Train tab does after Apply
    assert panel.shown_text().startswith("Rank 8   Alpha 8   Steps 2500\n")
    assert not panel.apply_button.isEnabled()
    assert "already" in panel.apply_button.toolTip()


def test_the_concept_combo_changes_the_advice(qtbot):
    panel = make_panel(qtbot)
    panel.set_dataset(300, "sd1")
    ranks = {}
    for index in range(panel.concept_combo.count()):
        panel.concept_combo.setCurrentIndex(index)
        ranks[panel.concept_combo.currentText()] = panel.advice.values["lora.rank"]
    assert ranks == {"Style": 8, "Subject": 16, "Concept": 32}
    assert panel.concept == "concept"


def test_an_unknown_architecture_says_what_to_do(qtbot):
    panel = make_panel(qtbot)
    panel.set_dataset(30, "flux")
    assert panel.shown_text().startswith("Unknown base architecture 'flux'.\nUse one of: sd1")
    assert not panel.apply_button.isEnabled()


def test_nothing_is_clipped_in_a_narrow_column(qtbot, tmp_path):
    host = QWidget()
    qtbot.addWidget(host)
    layout = QVBoxLayout(host)
    panel = TrainAdvicePanel()
    layout.addWidget(panel)
    layout.addStretch(1)
    panel.set_current(settings("sdxl"))
    panel.set_dataset(27, "sdxl", images_per_epoch=135)
    host.resize(360, 900)
    host.show()
    qtbot.waitExposed(host)

    for label in (panel.values_label, panel.reasons_label):
        assert label.isVisible()
        assert label.height() >= label.heightForWidth(label.width()) > 0
        assert label.geometry().bottom() <= panel.contentsRect().bottom()
    assert panel.apply_button.geometry().right() <= panel.contentsRect().right()
    assert panel.grab().save(str(tmp_path / "advice.png"))
