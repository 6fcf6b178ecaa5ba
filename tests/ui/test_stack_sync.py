"""The Mix tab's stack reaches the session one way, once per change, and is saved after a
debounce: one slider move is one adapter pass that re-scales only its LoRA; 20 slider moves
write the settings once; closing the window writes a save still waiting."""

from __future__ import annotations

import json

import pytest
from lora_files import make_lora_file

from lora_studio.core.generate import adapters as adapters_module
from lora_studio.core.generate.session import GenerationSession
from lora_studio.ui.settings import studio_settings
from lora_studio.ui.tabs.mix_tab import KEY_STACK


@pytest.fixture(scope="module")
def loras(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sync_loras")
    return (make_lora_file(tiny_model_dir, folder / "a.safetensors", seed=1),
            make_lora_file(tiny_model_dir, folder / "b.safetensors", seed=2))


@pytest.fixture
def window(make_window, tiny_model_dir):
    window = make_window()
    window.model_picker.choose(tiny_model_dir)
    yield window
    window.shutdown()


def stack(window, loras):
    """Both LoRAs on the Mix tab's stack (rows made; no render needed)."""
    tab = window.mix_tab
    for path in loras:
        window.session_model.add_lora(path)
    return tab


def stack_writes(settings, monkeypatch) -> list:
    writes: list = []
    set_value = settings.setValue
    monkeypatch.setattr(settings, "setValue", lambda key, value: (
        writes.append(value) if key == KEY_STACK else None, set_value(key, value))[1])
    return writes


def test_one_slider_move_is_one_adapter_pass_on_its_lora_alone(window, loras, tiny_model_dir,
                                                                monkeypatch, one_torch_thread):
    model = window.session_model
    tab = stack(window, loras)
    session = GenerationSession(tiny_model_dir)
    session.set_stack(model.stack)  # what a render's job does first
    model._session, model._session_spec = session, model._session_spec or model.base_model
    applies, rescaled, set_scales = [], [], []
    scales = adapters_module.AdapterScales
    apply, rescale = scales.apply, scales._rescale
    monkeypatch.setattr(scales, "apply", lambda this, active: (applies.append(active),
                                                               apply(this, active))[1])
    monkeypatch.setattr(scales, "_rescale", lambda this, name, *rest: (
        rescaled.append(name), rescale(this, name, *rest))[1])
    layers = [layer for _, layer in adapters_module.lora_layers(session.pipeline.unet)
              if "a" in layer.scaling]
    for layer in layers:
        real = layer.set_scale
        monkeypatch.setattr(layer, "set_scale", lambda name, scale, real=real: (
            set_scales.append(name), real(name, scale))[1])

    tab.row(loras[0]).slider.setValue(70)

    assert model.entry(loras[0]).weight == 0.7
    assert len(applies) == 1 and rescaled == ["a"]
    assert set_scales == ["a"] * len(layers)  # each of its layers set once
    assert {layer.scaling["a"] for layer in layers} == {0.7 * 4 / 4}  # alpha 4 / rank 4


def test_twenty_slider_moves_write_the_settings_once(window, loras, qtbot, monkeypatch):
    tab = stack(window, loras)
    writes = stack_writes(tab._settings, monkeypatch)
    slider = tab.row(loras[0]).slider
    for value in range(21, 101, 4):  # 20 moves
        slider.setValue(value)
    assert writes == []  # not on every tick
    with qtbot.waitSignal(tab._save_timer.timeout, timeout=5_000):
        pass
    assert len(writes) == 1
    assert [item[1] for item in json.loads(writes[0])] == [0.95, 1.0]


def test_closing_the_window_writes_a_stack_change_still_waiting(window, loras, monkeypatch):
    tab = stack(window, loras)
    tab.flush_settings()
    writes = stack_writes(tab._settings, monkeypatch)
    tab.row(loras[1]).slider.setValue(-50)
    assert writes == [] and tab._save_timer.isActive()
    window.close()
    assert len(writes) == 1
    saved = json.loads(str(studio_settings().value(KEY_STACK)))
    assert [item[1] for item in saved] == [1.0, -0.5]
