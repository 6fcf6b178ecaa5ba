"""Mix tab on the real engine (tiny model, CPU): library with inspect info, a stack of two LoRAs
on sliders that reach the live session, the debounced live preview, exports, the merge, prompt
tags, a refused file, and drops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication
from PySide6.QtWidgets import QApplication

from lora_studio.core.generate.session import GenerationRequest
from lora_files import make_lora_file

RENDER_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """Two kohya LoRAs for the tiny model with trigger words, one that fits another UNet, and
    files that are not LoRAs."""
    from lora_studio.core.lora.formats import read_lora, write_lora

    folder = tmp_path_factory.mktemp("mix_loras")
    for name, seed, trigger in (("zqstar", 1, "zqstar"), ("inkwash", 2, "inkwash style")):
        raw = make_lora_file(tiny_model_dir, folder / f"raw_{name}.safetensors", seed=seed)
        lora = read_lora(raw)
        lora.metadata.update({"modelspec.trigger_phrase": trigger, "ss_output_name": name,
                              "modelspec.architecture": "stable-diffusion-v1/lora"})
        write_lora(lora, folder / f"{name}.safetensors", layout="kohya")
        raw.unlink()
    other = folder / "other_arch"
    other.mkdir()
    make_lora_file(tiny_model_dir, other / "wide_unet.safetensors", seed=3,
                   block_out_channels=(48, 96), layers_per_block=1, cross_attention_dim=32,
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), sample_size=8,
                   norm_num_groups=8, attention_head_dim=8)
    junk = folder / "junk"
    junk.mkdir()
    (junk / "notes.safetensors").write_bytes(b"this is not a safetensors file")
    return folder


@pytest.fixture
def window(make_window, tiny_model_dir, one_torch_thread, qtbot):
    window = make_window()
    window.model_picker.choose(tiny_model_dir)
    window.tabs.setCurrentWidget(window.mix_tab)
    window.resize(1280, 800)
    window.show()
    window.mix_tab.preview._timer.setInterval(80)  # debounce kept, tests stay quick
    yield window
    window.shutdown()


def wait_library(qtbot, library, count):
    qtbot.waitUntil(lambda: len(library.items) == count and not any(
        item.loading for item in library.items), timeout=30_000)


def stack_two(window, qtbot, lora_dir):
    tab = window.mix_tab
    tab.library.add_files([lora_dir / "zqstar.safetensors", lora_dir / "inkwash.safetensors"])
    wait_library(qtbot, tab.library, 2)
    for name in ("zqstar", "inkwash"):
        tab.library_panel.select(lora_dir / f"{name}.safetensors")
        qtbot.mouseClick(tab.library_panel.stack_button, Qt.LeftButton)
    return tab


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def wait_preview(qtbot, tab, shown_before: int):
    qtbot.waitUntil(lambda: tab.preview.renders_shown > shown_before
                    and not tab.preview.pending and not tab.model.runner.is_running,
                    timeout=RENDER_TIMEOUT_MS)


def capture_preview(tab):
    images = []
    tab.preview.image_ready.connect(images.append)
    return images


def lora_scalings(session, adapter: str) -> set[float]:
    """The scale PEFT applies for `adapter` in every LoRA layer of the UNet."""
    return {round(float(module.scaling[adapter]), 4) for module in session.pipeline.unet.modules()
            if hasattr(module, "scaling") and adapter in getattr(module, "scaling", {})}


def block_scalings(session, adapter: str) -> dict[str, set[float]]:
    """`lora_scalings` per part of the UNet (down_blocks, mid_block, up_blocks)."""
    out: dict[str, set[float]] = {}
    for name, module in session.pipeline.unet.named_modules():
        if adapter in (getattr(module, "scaling", None) or {}):
            out.setdefault(name.split(".")[0], set()).add(round(float(module.scaling[adapter]), 4))
    return out


# ----------------------------------------------------------------------------- library
def test_library_shows_inspect_info_and_refuses_what_is_not_a_lora(window, qtbot, lora_dir):
    library = window.mix_tab.library
    assert window.mix_tab.drop_paths([lora_dir]) == 4  # the folder and its subfolders
    wait_library(qtbot, library, 4)
    star = library.item(lora_dir / "zqstar.safetensors")
    assert star.usable and star.trigger_words == ["zqstar"]
    assert star.summary().startswith("SD 1.x · LoRA · rank 4 · alpha 4")
    texts = [window.mix_tab.library_panel.list.item(r).text()
             for r in range(window.mix_tab.library_panel.list.count())]
    assert any("zqstar" in t and "trigger: zqstar" in t and "rank 4" in t for t in texts)
    assert any("inkwash" in t and "trigger: inkwash style" in t for t in texts)

    junk = library.item(lora_dir / "junk" / "notes.safetensors")
    assert junk.error and "safetensors" in junk.error
    panel = window.mix_tab.library_panel
    panel.select(junk.path)
    assert not panel.stack_button.isEnabled() and "Cannot be used" in panel.details.toPlainText()
    assert window.mix_tab.add_to_stack(junk.path) is False  # refused with the reason
    assert "cannot be stacked" in window.mix_tab.stack_status.text()
    assert window.session_model.stack == ()

    panel.select(star.path)  # the full inspect report of the selected file
    assert "trigger_phrase: zqstar" in panel.details.toPlainText()


def test_a_trained_lora_appears_in_the_library(window, qtbot, lora_dir):
    with qtbot.waitSignal(window.library.changed):
        window.train_tab.lora_trained.emit(lora_dir / "zqstar.safetensors")
    wait_library(qtbot, window.library, 1)
    assert window.library.items[0].path == lora_dir / "zqstar.safetensors"


def test_dropping_lora_files_on_the_mix_tab_adds_them(window, qtbot, lora_dir):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(lora_dir / "inkwash.safetensors"))])
    pos = QPointF(window.width() / 2, window.height() / 2)
    enter = QDragEnterEvent(pos.toPoint(), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(window, QDropEvent(pos, Qt.CopyAction, mime, Qt.LeftButton,
                                              Qt.NoModifier))
    wait_library(qtbot, window.library, 1)
    assert window.tabs.currentWidget() is window.mix_tab  # not taken for a dataset


# ----------------------------------------------------------------------------- the stack
def test_sliders_change_the_live_sessions_adapter_weights(window, qtbot, lora_dir):
    tab = stack_two(window, qtbot, lora_dir)
    rows = tab.rows()
    assert [r.name_label.text() for r in rows] == ["zqstar", "inkwash"]
    assert (rows[0].slider.minimum(), rows[0].slider.maximum()) == (-200, 200)
    assert (rows[0].spin.minimum(), rows[0].spin.maximum(), rows[0].spin.singleStep()) == (
        -2.0, 2.0, 0.05)
    images = capture_preview(tab)
    tab.preview_check.setChecked(True)
    wait_preview(qtbot, tab, 0)
    session = window.session_model.session
    pipe = session.pipeline
    assert [(lo.name, lo.weight) for lo in session.loras] == [("zqstar", 1.0), ("inkwash", 1.0)]
    assert lora_scalings(session, "zqstar") == {1.0}  # alpha 4 / rank 4 at strength 1
    first = pixels(images[-1])

    rows[0].slider.setValue(35)  # the slider snaps to 0.05 steps: 0.35
    assert rows[0].spin.value() == pytest.approx(0.35)
    assert window.session_model.entry(rows[0].path).weight == pytest.approx(0.35)
    # reached the session at once (set_adapters), before any render
    assert [lo.weight for lo in session.loras] == pytest.approx([0.35, 1.0])
    assert lora_scalings(session, "zqstar") == {0.35}
    rows[1].spin.setValue(-0.5)  # the numeric field moves the slider too
    assert rows[1].slider.value() == -50 and lora_scalings(session, "inkwash") == {-0.5}

    shown = tab.preview.renders_shown
    wait_preview(qtbot, tab, shown)
    assert np.abs(pixels(images[-1]) - first).mean() > 0.5  # the preview shows the new mix
    assert window.session_model.session.pipeline is pipe  # never reloaded

    rows[1].enabled_box.setChecked(False)  # off: left out of the active adapters
    assert [lo.enabled for lo in session.loras] == [True, False]
    qtbot.mouseClick(rows[0].remove_button, Qt.LeftButton)
    assert [e.name for e in window.session_model.stack] == ["inkwash"]
    assert [r.name_label.text() for r in tab.rows()] == ["inkwash"]


def test_live_preview_is_debounced_and_never_shows_a_stale_stack(window, qtbot, lora_dir):
    tab = stack_two(window, qtbot, lora_dir)
    images = capture_preview(tab)
    tab.preview.steps = 30  # slow enough to change the stack while it renders
    tab.preview._timer.setInterval(300)
    tab.preview_check.setChecked(True)
    row = tab.rows()[0]
    for value in (90, 80, 70, 60, 50):  # a drag: one render when it pauses, not five
        row.slider.setValue(value)
    wait_preview(qtbot, tab, 0)
    assert tab.preview.renders_started == 1

    row.slider.setValue(20)
    qtbot.waitUntil(lambda: window.session_model.is_previewing, timeout=RENDER_TIMEOUT_MS)
    qtbot.waitUntil(lambda: tab.preview.renders_started == 2, timeout=RENDER_TIMEOUT_MS)
    shown = tab.preview.renders_shown
    row.slider.setValue(-100)  # while it renders: that render is stopped and not shown
    wait_preview(qtbot, tab, shown)
    assert tab.preview.renders_started == 3 and tab.preview.renders_shown == shown + 1

    # What is on screen is exactly the current stack (-1.0 and 1.0) at the preview's seed.
    session = window.session_model.session
    fresh = session.generate(GenerationRequest(tab.preview.prompt, steps=30, seed=tab.preview.seed,
                                               sampler="DPM++ 2M"))
    assert np.array_equal(pixels(images[-1]), pixels(fresh[0].image))


def test_a_slider_moved_while_the_preview_renders_never_waits_for_it(window, qtbot, lora_dir,
                                                                   monkeypatch):
    """The render holds the pipeline (parked in its first step here): the slider's call returns
    at once, the new weight waits for that render to end (never changes it halfway), and the
    preview that follows shows it. (That the preview then equals a fresh render of the final
    stack: test_live_preview_is_debounced_and_never_shows_a_stale_stack.)"""
    import threading
    import time

    from lora_studio.core.generate import session as session_module

    tab = stack_two(window, qtbot, lora_dir)
    tab.preview_check.setChecked(True)
    wait_preview(qtbot, tab, 0)
    session = window.session_model.session
    parked, go = threading.Event(), threading.Event()
    step_callback = session_module.step_callback

    def parking_callback(emit, control, index, arch):
        inner = step_callback(emit, control, index, arch)

        def on_step_end(pipe, step, timestep, kwargs):
            if not parked.is_set():  # the first step only
                parked.set()
                go.wait(timeout=60)  # the worker holds the session's lock meanwhile
            return inner(pipe, step, timestep, kwargs)

        return on_step_end

    monkeypatch.setattr(session_module, "step_callback", parking_callback)
    row = tab.rows()[0]
    try:
        row.slider.setValue(60)
        qtbot.waitUntil(parked.is_set, timeout=RENDER_TIMEOUT_MS)
        assert not session._lock.acquire(blocking=False)  # the render holds the pipeline
        tick = time.perf_counter()
        row.slider.setValue(-40)  # would hang until the gate's timeout if it waited
        elapsed = time.perf_counter() - tick
        assert not go.is_set() and window.session_model.is_previewing  # still parked
        assert elapsed < 0.1  # a generous responsiveness bound (a frame is 16 ms)
        assert [lo.weight for lo in session.loras] == pytest.approx([-0.4, 1.0])  # queued
        # the running render keeps its own (read past `session.pipeline`, which waits for it)
        assert {round(float(m.scaling["zqstar"]), 4) for m in session._pipe.unet.modules()
                if "zqstar" in (getattr(m, "scaling", None) or {})} == {0.6}
    finally:
        go.set()
    shown = tab.preview.renders_shown
    wait_preview(qtbot, tab, shown)  # the parked render is cancelled, a fresh one shown
    assert lora_scalings(session, "zqstar") == {-0.4}


def test_a_lora_the_model_refuses_is_marked_and_the_rest_renders(window, qtbot, lora_dir):
    tab = window.mix_tab
    wide = lora_dir / "other_arch" / "wide_unet.safetensors"
    tab.library.add_files([lora_dir / "zqstar.safetensors", wide])
    wait_library(qtbot, tab.library, 2)
    assert tab.add_to_stack(wide) and tab.add_to_stack(lora_dir / "zqstar.safetensors")
    tab.preview_check.setChecked(True)
    wait_preview(qtbot, tab, 0)  # the preview rendered, with the LoRA that fits
    assert [lo.name for lo in window.session_model.session.loras] == ["zqstar"]
    problem = window.session_model.problem(wide)
    assert problem and "wide_unet.safetensors was left out" in problem
    assert "does not fit this model" in problem
    row = tab.row(wide)
    assert row.problem_label.isVisibleTo(tab) and "left out" in row.problem_label.text()
    assert not tab.row(lora_dir / "zqstar.safetensors").problem_label.isVisibleTo(tab)


def choose_preset(editor, name: str) -> None:
    """As a person does: pick the preset in the editor's combo box."""
    index = editor.preset_combo.findData(name)
    editor.preset_combo.setCurrentIndex(index)
    editor.preset_combo.activated.emit(index)


def stack_two_previewed(window, qtbot, lora_dir):
    """Two LoRAs stacked, the live preview on and rendered once: (tab, the preview's images,
    the live session)."""
    tab = stack_two(window, qtbot, lora_dir)
    images = capture_preview(tab)
    tab.preview_check.setChecked(True)
    wait_preview(qtbot, tab, 0)
    return tab, images, window.session_model.session


def test_the_block_weights_editor_reaches_the_session_and_the_preview(window, qtbot, lora_dir):
    from lora_studio.core.lora.block_weights import BlockWeights

    tab, images, session = stack_two_previewed(window, qtbot, lora_dir)
    first = pixels(images[-1])

    row = tab.rows()[0]
    editor = row.blocks_editor
    assert not editor.isVisibleTo(tab) and row.blocks_button.text() == "Blocks ▸"
    qtbot.mouseClick(row.blocks_button, Qt.LeftButton)
    assert editor.isVisibleTo(tab) and row.blocks_button.text() == "Blocks ▾"
    assert editor.preset_combo.currentData() == "ALL" and len(editor.spins) == 17

    choose_preset(editor, "OUTALL")
    outall = BlockWeights.parse("OUTALL")
    assert window.session_model.entry(row.path).block_weights == outall
    assert session.loras[0].block_weights == outall  # reached the session at once
    # in the pipeline at once: the tiny UNet's in and middle blocks off, its out blocks on
    assert block_scalings(session, "zqstar") == {"down_blocks": {0.0}, "mid_block": {0.0},
                                                 "up_blocks": {1.0}}
    assert lora_scalings(session, "inkwash") == {1.0}
    assert row.blocks_button.text() == "Blocks: OUTALL ▾"
    assert editor.text_edit.text() == "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"
    assert editor.spins["IN01"].value() == 0 and editor.spins["OUT09"].value() == 1
    shown = tab.preview.renders_shown
    wait_preview(qtbot, tab, shown)  # the preview re-rendered with the block weights
    assert np.abs(pixels(images[-1]) - first).mean() > 0.5

    mid_only = "0,0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0"
    editor.text_edit.setText(mid_only)
    editor.text_edit.editingFinished.emit()
    assert window.session_model.entry(row.path).block_weights == BlockWeights.parse(mid_only)
    assert editor.preset_combo.currentText() == "Custom" and editor.spins["MID"].value() == 1
    assert row.blocks_button.text() == "Blocks: custom ▾"
    editor.text_edit.setText("1,2")
    editor.text_edit.editingFinished.emit()
    assert editor.error_label.isVisibleTo(tab) and "got 2" in editor.error_label.text()
    assert window.session_model.entry(row.path).block_weights == BlockWeights.parse(mid_only)

    editor.spins["OUT10"].setValue(0.5)
    changed = window.session_model.entry(row.path).block_weights
    assert changed["OUT10"] == 0.5 and changed["MID"] == 1
    assert tab.copy_prompt_tags() == (f"<lora:zqstar:1:lbw={changed.numbers()}> "
                                      "<lora:inkwash:1>")
    choose_preset(editor, "OUTS")
    assert tab.copy_prompt_tags() == "<lora:zqstar:1:lbw=OUTS> <lora:inkwash:1>"

    choose_preset(editor, "ALL")  # all ones: back to the plain strength
    assert window.session_model.entry(row.path).block_weights is None
    assert session.loras[0].block_weights is None and lora_scalings(session, "zqstar") == {1.0}
    assert row.blocks_button.text() == "Blocks ▾"
    qtbot.mouseClick(row.blocks_button, Qt.LeftButton)
    assert not editor.isVisibleTo(tab)


def test_block_weights_are_remembered_with_the_stack(make_window, window, qtbot, lora_dir,
                                                      settings):
    from lora_studio.core.lora.block_weights import BlockWeights

    tab = stack_two(window, qtbot, lora_dir)
    row = tab.rows()[1]
    row.set_blocks_open(True)
    choose_preset(row.blocks_editor, "NO_TE")
    qtbot.waitSignal(tab._save_timer.timeout, timeout=5_000).wait()  # saved after a debounce
    saved = json.loads(settings.value("mix/stack"))
    assert saved[0][3:] == [None] and saved[1][3] == "0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"
    window.close()
    again = make_window(settings=type(settings)(settings.fileName(), settings.format()))
    assert [e.block_weights for e in again.session_model.stack] == [
        None, BlockWeights.parse("NO_TE")]
    assert again.mix_tab.rows()[1].blocks_button.text() == "Blocks: NO_TE ▸"


def test_a_late_start_reaches_the_session_and_the_preview_and_is_remembered(
        make_window, window, qtbot, lora_dir, settings):
    tab, images, session = stack_two_previewed(window, qtbot, lora_dir)
    first = pixels(images[-1])
    row = tab.rows()[1]
    assert row.start_spin.value() == 0 and row.start_spin.text() == "Starts at 0 % of steps"

    row.start_spin.setValue(50)
    assert window.session_model.entry(row.path).start == 0.5
    assert [lo.start for lo in session.loras] == [0.0, 0.5]  # reached the session at once
    shown = tab.preview.renders_shown
    wait_preview(qtbot, tab, shown)  # re-rendered: inkwash off for the first half
    assert np.abs(pixels(images[-1]) - first).mean() > 0.1

    saved = json.loads(settings.value("mix/stack"))
    assert saved[0][4:] == [] and saved[1][4] == 0.5
    window.close()
    again = make_window(settings=type(settings)(settings.fileName(), settings.format()))
    assert [e.start for e in again.session_model.stack] == [0.0, 0.5]
    assert again.mix_tab.rows()[1].start_spin.value() == 50


# ----------------------------------------------------------------------------- exports
def test_copy_prompt_tags_for_a1111(window, qtbot, lora_dir):
    tab = stack_two(window, qtbot, lora_dir)
    tab.rows()[0].spin.setValue(0.8)
    qtbot.mouseClick(tab.copy_tags_button, Qt.LeftButton)
    assert QGuiApplication.clipboard().text() == "<lora:zqstar:0.8> <lora:inkwash:1>"
    tab.rows()[1].enabled_box.setChecked(False)
    assert tab.copy_prompt_tags() == "<lora:zqstar:0.8>"


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
def test_export_keeps_every_update_and_the_metadata(window, qtbot, lora_dir, tmp_path, layout):
    from lora_studio.core.lora.formats import read_lora

    tab = window.mix_tab
    source = lora_dir / "zqstar.safetensors"
    tab.library.add_files([source])
    wait_library(qtbot, tab.library, 1)
    with qtbot.waitSignal(tab.exported, timeout=30_000) as done:
        tab.export_lora(source, tmp_path / "out" / "exported", layout)
    target = tmp_path / "out" / "exported.safetensors"
    assert done.args == [target] and tab.library.item(target) is not None
    original, copy = read_lora(source), read_lora(target)
    assert copy.layout == ("kohya" if layout == "kohya" else "diffusers")
    assert copy.metadata["modelspec.trigger_phrase"] == "zqstar"
    assert set(copy.modules) == set(original.modules)
    for name, module in original.modules.items():
        assert copy.modules[name].delta_weight().allclose(module.delta_weight(), atol=1e-6)


def test_save_merged_writes_the_stack_as_one_lora(window, qtbot, lora_dir, tmp_path):
    from lora_studio.core.lora.formats import read_lora

    tab = stack_two(window, qtbot, lora_dir)
    tab.rows()[0].spin.setValue(0.5)
    tab.rows()[1].spin.setValue(-0.25)
    with qtbot.waitSignal(tab.exported, timeout=60_000):
        assert tab.save_merged(tmp_path / "mix.safetensors")
    merged = read_lora(tmp_path / "mix.safetensors")
    assert merged.metadata["modelspec.merged_from"] == (
        "zqstar.safetensors:0.5, inkwash.safetensors:-0.25")
    a, b = (read_lora(lora_dir / f"{n}.safetensors") for n in ("zqstar", "inkwash"))
    for name in a.modules:
        expected = 0.5 * a.modules[name].delta_weight() - 0.25 * b.modules[name].delta_weight()
        assert merged.modules[name].delta_weight().allclose(expected, atol=1e-5)
    assert "Saved the merge of 2 LoRAs" in tab.stack_status.text()

    choose_preset(tab.rows()[0].blocks_editor, "OUTALL")  # baked in, block by block
    with qtbot.waitSignal(tab.exported, timeout=60_000):
        assert tab.save_merged(tmp_path / "mix2.safetensors")
    merged = read_lora(tmp_path / "mix2.safetensors")
    assert merged.metadata["modelspec.merged_from"] == (
        "zqstar.safetensors:0.5:lbw=OUTALL, inkwash.safetensors:-0.25")
    for name in a.modules:  # OUTALL on the tiny UNet: IN01 (down level 0) and MID at 0
        factor = 0.0 if name.startswith(("unet.down_blocks.0.", "unet.mid_block.")) else 1.0
        expected = (0.5 * factor * a.modules[name].delta_weight()
                    - 0.25 * b.modules[name].delta_weight())
        assert merged.modules[name].delta_weight().allclose(expected, atol=1e-5), name
    assert "Saved the merge of 2 LoRAs" in tab.stack_status.text()


def test_the_stack_and_preview_settings_come_back(make_window, window, qtbot, lora_dir,
                                                   settings):
    tab = stack_two(window, qtbot, lora_dir)
    tab.rows()[1].spin.setValue(0.65)
    tab.rows()[0].enabled_box.setChecked(False)
    tab.preview_prompt.setText("zqstar, red")
    tab.preview_prompt.editingFinished.emit()
    tab.flush_settings()  # the stack is saved after a debounce; this writes it now
    saved = json.loads(settings.value("mix/stack"))
    assert [Path(p).name for p, *_ in saved] == ["zqstar.safetensors", "inkwash.safetensors"]
    window.close()  # saves the settings, as quitting does
    again = make_window(settings=type(settings)(settings.fileName(), settings.format()))
    assert [(e.name, e.weight, e.enabled) for e in again.session_model.stack] == [
        ("zqstar", 1.0, False), ("inkwash", 0.65, True)]
    assert again.mix_tab.preview_prompt.text() == "zqstar, red"
    assert [r.weight for r in again.mix_tab.rows()] == [1.0, 0.65]


def test_trigger_words_fall_back_to_the_tags_of_most_captions():
    from types import SimpleNamespace

    from lora_studio.ui.lora_library import LibraryItem

    tags = [("zqstar", 12), ("a large purple star on a gray background", 1), ("sks", 7),
            ("red", 2)]
    item = LibraryItem(Path("x.safetensors"), SimpleNamespace(metadata={}, top_tags=tags))
    assert item.trigger_words == ["zqstar", "sks"]  # in most captions, short: trigger words
    with_phrase = LibraryItem(Path("x.safetensors"), SimpleNamespace(
        metadata={"modelspec.trigger_phrase": "zq style, ink"}, top_tags=tags))
    assert with_phrase.trigger_words == ["zq style", "ink"]


def test_closing_the_window_stops_a_due_preview(window, qtbot, lora_dir):
    tab = stack_two(window, qtbot, lora_dir)
    tab.preview._timer.setInterval(300)
    tab.preview_check.setChecked(True)
    tab.rows()[0].spin.setValue(0.4)  # a render is due in 300 ms...
    window.shutdown()  # ...but the window goes first
    qtbot.wait(600)
    assert tab.preview.renders_started == 0 and not window.runner.is_running
    tab.rows()[0].spin.setValue(0.2)
    qtbot.wait(400)
    assert tab.preview.renders_started == 0
