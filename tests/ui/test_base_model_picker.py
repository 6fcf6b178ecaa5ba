"""The shared base-model picker: every tab follows it, it shows the architecture, lists models
in the local hub cache, explains a model it cannot use, and is remembered."""

from __future__ import annotations

import shutil

from lora_studio.ui.base_model import BaseModelChoice


def wait_described(qtbot, window):
    qtbot.waitUntil(lambda: window.base_model.description != "", timeout=15_000)


def test_every_tab_follows_the_picked_model_and_its_architecture_shows(
        make_window, qtbot, tiny_model_dir, tiny_vpred_model_dir):
    window = make_window()
    wait_described(qtbot, window)
    picker = window.model_picker
    assert picker.combo.currentText() == "Tiny Shapes (built-in)" and picker.arch_label.text() == \
        "SD 1.x"
    assert window.status.model_label.text() == "Model: Tiny Shapes (built-in) (SD 1.x)"

    picker.choose(tiny_model_dir)
    wait_described(qtbot, window)
    assert picker.arch_label.text() == "SD 1.x"
    assert window.session_model.base_model == str(tiny_model_dir)  # Generate and Mix
    assert window.train_tab.form.to_config().model.base == str(tiny_model_dir)  # Train
    assert tiny_model_dir.name in window.train_tab.form.base_label.text()
    assert window.status.model_label.text() == f"Model: {tiny_model_dir.name} (SD 1.x)"

    picker.combo.setEditText(str(tiny_vpred_model_dir))  # typed in, as a person would
    picker.combo.lineEdit().editingFinished.emit()
    wait_described(qtbot, window)
    assert picker.arch_label.text() == "SD 2.x (v-prediction)"
    assert window.session_model.base_model == str(tiny_vpred_model_dir)


def test_a_model_that_cannot_be_used_says_why(make_window, qtbot, tmp_path):
    window = make_window()
    window.model_picker.choose(tmp_path / "missing.safetensors")
    wait_described(qtbot, window)
    picker = window.model_picker
    assert not window.base_model.ok
    assert picker.arch_label.text() == "⚠ cannot use"
    assert "No model found" in picker.arch_label.toolTip()
    assert "Check the path" in picker.arch_label.toolTip()
    assert window.status.model_label.text().endswith("(cannot be used)")


def test_models_in_the_local_hub_cache_are_listed(make_window, qtbot, tiny_model_dir, tmp_path,
                                                  monkeypatch):
    repo = tmp_path / "hub" / "models--tiny-org--tiny-sd"
    sha = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    (tmp_path / "hub" / "models--org--not-a-model" / "refs").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    window = make_window()
    combo = window.model_picker.combo
    items = [combo.itemText(i) for i in range(combo.count())]
    assert items == ["Tiny Shapes (built-in)", "tiny-org/tiny-sd  (hub cache)"]
    combo.setCurrentIndex(1)
    combo.activated.emit(1)
    wait_described(qtbot, window)
    assert window.base_model.spec == "tiny-org/tiny-sd"
    assert window.model_picker.arch_label.text() == "SD 1.x"


def test_the_choice_is_remembered_and_a_preset_can_set_it(make_window, qtbot, settings,
                                                          tiny_model_dir, tmp_path):
    window = make_window()
    window.model_picker.choose(tiny_model_dir)
    settings.sync()
    again = BaseModelChoice(type(settings)(settings.fileName(), settings.format()))
    assert again.spec == str(tiny_model_dir) and again.recent() == [str(tiny_model_dir)]
    again.shutdown()

    window.train_tab.form.sample_every_spin.setValue(0)  # no dataset open: no preview prompt
    window.train_tab.save_preset(tmp_path / "preset.toml")  # names the model picked
    window.model_picker.choose(None)
    window.train_tab.load_preset(tmp_path / "preset.toml")
    assert window.base_model.spec == str(tiny_model_dir)
    assert window.model_picker.combo.currentText() == str(tiny_model_dir)
