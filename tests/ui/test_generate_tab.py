"""Generate tab on the REAL tiny model (64 px, 2-3 steps on the CPU): Generate shows step previews
and puts the image in the gallery and a PNG with A1111 parameters on disk; the same seed gives
the same pixels; Cancel stops; a dropped A1111 PNG fills the fields; a LoRA in the stack changes
the image and is named in its parameters; a failing render explains itself."""

from __future__ import annotations

from drops import drop_on
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from lora_studio.core import events as ev
from lora_studio.ui.session_model import SessionModel
from lora_studio.ui.tabs.generate_tab import GenerateTab
from lora_studio.ui.widgets.error_dialog import ErrorDialog
from lora_studio.ui.workers import JobRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RUN_TIMEOUT_MS = 60_000

A1111_TEXT = (
    "a castle on a hill, golden hour\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 23, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.5, Seed: 987654321, "
    "Size: 64x128, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)


@pytest.fixture
def tab(qtbot, settings, tiny_model_dir, tmp_path):
    runner = JobRunner()
    model = SessionModel(runner, tiny_model_dir)
    tab = GenerateTab(model, settings)
    tab._test_runner = runner
    tab.set_output_dir(tmp_path / "outputs")
    tab.resize(1100, 700)
    qtbot.addWidget(tab)
    yield tab
    if runner.is_running:  # never leave a render thread behind
        runner.stop()


def fill(tab: GenerateTab, qtbot, prompt: str = "a red star", seed: str = "42",
         steps: int = 3) -> None:
    form = tab.form
    form.prompt_edit.clear()
    qtbot.keyClicks(form.prompt_edit, prompt)
    form.seed_edit.setText(seed)
    form.steps_spin.setValue(steps)
    form.width_spin.setValue(64)
    form.height_spin.setValue(64)
    form.sampler_combo.setCurrentText("DPM++ 2M")


def generate(tab: GenerateTab, qtbot) -> ev.Event:
    with qtbot.waitSignal(tab.model.generation_finished, timeout=RUN_TIMEOUT_MS) as done:
        qtbot.mouseClick(tab.generate_button, Qt.LeftButton)
    return done.args[0]


def pixels(entry) -> np.ndarray:
    return np.asarray(Image.open(entry.path).convert("RGB"), dtype=np.int16)


def a1111_png(path: Path, text: str = A1111_TEXT) -> Path:
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (64, 128), (90, 120, 200)).save(path, pnginfo=info)
    return path


def make_lora(model_dir: Path, out: Path) -> Path:
    """A random rank-4 LoRA on the tiny UNet's attention, written as a kohya file."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from lora_studio.core.lora.formats import lora_from_peft, write_lora

    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    torch.manual_seed(3)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    return write_lora(lora_from_peft(unet), out)


def test_generate_shows_steps_and_saves_a_png_with_its_parameters(tab, qtbot, tmp_path):
    tab.show()
    fill(tab, qtbot, "a red star, glowing", seed="42")
    steps: list[ev.GenerationStep] = []
    tab.model.generation_event.connect(
        lambda e: steps.append(e) if isinstance(e, ev.GenerationStep) else None)
    terminal = generate(tab, qtbot)
    assert isinstance(terminal, ev.Finished), terminal
    assert [s.step for s in steps] == [1, 2, 3] and all(s.image is not None for s in steps)

    assert tab.gallery.count() == 1
    entry = tab.gallery.current_entry()
    assert entry.seed == 42 and entry.pixmap.width() == 64
    assert tab.view.pixmap().cacheKey() == entry.pixmap.cacheKey()  # the result is shown large
    saved = sorted((tmp_path / "outputs").glob("*.png"))
    assert saved == [entry.path]
    params = Image.open(saved[0]).text["parameters"]
    assert params.startswith("a red star, glowing\n")
    for part in ("Steps: 3", "Sampler: DPM++ 2M", "Seed: 42", "Size: 64x64"):
        assert part in params
    assert tab.info_view.toPlainText() == params
    assert "Done" in tab.status_label.text()
    assert tab.generate_button.isEnabled() and not tab.cancel_button.isEnabled()
    assert tab.save_as_button.isEnabled()
    copy = tab.save_selected_as(tmp_path / "copy")
    assert copy.suffix == ".png" and Image.open(copy).text["parameters"] == params


def test_reusing_the_seed_of_a_random_render_gives_the_same_pixels(tab, qtbot):
    fill(tab, qtbot, seed="-1", steps=2)
    assert not tab.form.reuse_seed_button.isEnabled()
    assert isinstance(generate(tab, qtbot), ev.Finished)
    first = tab.gallery.current_entry()
    qtbot.mouseClick(tab.form.reuse_seed_button, Qt.LeftButton)  # ♻
    assert tab.form.seed_edit.text() == str(first.seed)
    assert isinstance(generate(tab, qtbot), ev.Finished)
    second = tab.gallery.current_entry()
    assert second is not first and second.seed == first.seed
    assert np.array_equal(pixels(first), pixels(second))
    qtbot.mouseClick(tab.form.random_seed_button, Qt.LeftButton)  # 🎲
    assert tab.form.seed_edit.text() == "-1" and tab.form.seed() is None


def test_cancel_stops_the_render(tab, qtbot, tmp_path):
    fill(tab, qtbot, steps=60)
    tab.form.count_spin.setValue(3)
    clicked: list[int] = []

    def cancel_on_first_step(event) -> None:
        if isinstance(event, ev.GenerationStep) and not clicked:
            clicked.append(event.step)
            assert tab.cancel_button.isEnabled() and not tab.generate_button.isEnabled()
            qtbot.mouseClick(tab.cancel_button, Qt.LeftButton)

    tab.model.generation_event.connect(cancel_on_first_step)
    terminal = generate(tab, qtbot)
    assert isinstance(terminal, ev.Cancelled), terminal
    assert clicked == [1]
    assert tab.progress.value() < 10  # stopped within a step or two, not after 180
    assert tab.gallery.count() == 0 and not list((tmp_path / "outputs").glob("*.png"))
    assert "Cancelled" in tab.status_label.text()
    assert tab.generate_button.isEnabled() and tab.form.isEnabled()


def test_dropping_an_a1111_png_fills_the_fields(tab, tmp_path):
    tab.show()
    drop = drop_on(tab, [a1111_png(tmp_path / "a1111.png")])
    assert drop.isAccepted()
    form = tab.form
    assert form.prompt_edit.toPlainText() == "a castle on a hill, golden hour"
    assert form.negative_edit.toPlainText() == "blurry, lowres"
    assert form.steps_spin.value() == 23 and form.cfg_spin.value() == 5.5
    assert form.seed_edit.text() == "987654321"
    assert (form.width_spin.value(), form.height_spin.value()) == (64, 128)
    assert form.sampler_combo.currentText() == "DPM++ 2M"
    assert form.schedule_combo.currentText() == "Karras"
    assert "a1111.png" in tab.status_label.text()


def test_an_unknown_sampler_keeps_the_current_one_and_says_so(tab, tmp_path):
    text = A1111_TEXT.replace("DPM++ 2M", "Restart").replace("Schedule type: Karras, ", "")
    tab.form.sampler_combo.setCurrentText("Euler")
    assert tab.load_parameters_from(a1111_png(tmp_path / "restart.png", text))
    assert tab.form.sampler_combo.currentText() == "Euler"
    assert "Restart" in tab.status_label.text() and "Euler" in tab.status_label.text()
    assert tab.form.steps_spin.value() == 23  # the rest still loaded


def test_dropping_a_png_on_the_window_fills_generate_when_it_is_shown(make_window, tmp_path,
                                                                       dataset_dir):
    window = make_window()
    window.show()
    window.tabs.setCurrentWidget(window.generate_tab)
    drop_on(window, [a1111_png(tmp_path / "a1111.png")])
    assert window.generate_tab.form.steps_spin.value() == 23
    assert window.tabs.currentWidget() is window.generate_tab
    assert window.dataset_tab.folder is None  # not opened as a dataset
    # A folder dropped on the Generate tab still opens in the Dataset tab.
    drop_on(window, [dataset_dir])
    assert window.tabs.currentWidget() is window.dataset_tab


def test_a_lora_in_the_stack_changes_the_image_and_is_named_in_its_parameters(
        tab, qtbot, tiny_model_dir, tmp_path):
    fill(tab, qtbot, "a red star", seed="7", steps=2)
    assert isinstance(generate(tab, qtbot), ev.Finished)
    base = tab.gallery.current_entry()
    assert "Lora hashes" not in base.parameters

    lora = make_lora(tiny_model_dir, tmp_path / "zqstyle.safetensors")
    tab.model.add_lora(lora, weight=0.8)
    assert "zqstyle" in tab.stack_label.text() and "0.80" in tab.stack_label.text()
    assert isinstance(generate(tab, qtbot), ev.Finished)
    styled = tab.gallery.current_entry()
    assert np.abs(pixels(styled) - pixels(base)).mean() > 1.0
    params = Image.open(styled.path).text["parameters"]
    assert "<lora:zqstyle:0.8>" in params and "Lora hashes: \"zqstyle: " in params
    assert [lo.name for lo in tab.model.session.loras] == ["zqstyle"]

    tab.model.set_enabled(lora, False)  # switched off: the base image again, nothing reloaded
    assert "(off)" in tab.stack_label.text()
    report = tab.model.session.loras[0].report
    assert isinstance(generate(tab, qtbot), ev.Finished)
    off = tab.gallery.current_entry()
    assert np.array_equal(pixels(off), pixels(base)) and "zqstyle" not in off.parameters
    assert tab.model.session.loras[0].report is report


def test_a_failing_render_shows_the_error_dialog(tab, qtbot):
    tab.show()
    fill(tab, qtbot, steps=2)
    tab.form.sampler_combo.setCurrentText("Euler a")
    tab.form.schedule_combo.setCurrentText("Karras")  # diffusers cannot do this pair
    assert isinstance(generate(tab, qtbot), ev.Failed)
    dialogs = [w for w in QApplication.topLevelWidgets()
               if isinstance(w, ErrorDialog) and w.isVisible()]
    assert dialogs, "a failed render must tell the user why"
    assert "Karras" in dialogs[-1].message_label.text()
    assert "Traceback" in dialogs[-1].details_view.toPlainText()
    assert tab.generate_button.isEnabled() and tab.gallery.count() == 0
    for dialog in dialogs:
        dialog.close()


def test_the_settings_of_the_last_render_come_back_next_time(tab, qtbot, settings):
    fill(tab, qtbot, "a blue moon over hills", seed="77", steps=2)
    tab.form.negative_edit.setPlainText("lowres")
    tab.form.cfg_spin.setValue(4.5)
    tab.form.count_spin.setValue(2)
    tab.form.schedule_combo.setCurrentText("Karras")
    assert isinstance(generate(tab, qtbot), ev.Finished)
    settings.sync()
    again = GenerateTab(SessionModel(JobRunner()), type(settings)(settings.fileName(),
                                                                  settings.format()))
    qtbot.addWidget(again)
    form = again.form
    assert form.prompt_edit.toPlainText() == "a blue moon over hills"
    assert form.negative_edit.toPlainText() == "lowres"
    assert (form.steps_spin.value(), form.cfg_spin.value(), form.seed_edit.text()) == (
        2, 4.5, "77")
    assert (form.sampler_combo.currentText(), form.schedule_combo.currentText()) == (
        "DPM++ 2M", "Karras")
    assert (form.width_spin.value(), form.count_spin.value()) == (64, 2)
