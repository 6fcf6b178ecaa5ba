"""Bad LoRA files of the corpus (tests/bad_input_files.py) dropped on the main window while the
Mix tab is shown: each is refused with its reason shown to the person (what + what to do, no
traceback), no pickle payload runs, and the window keeps working: a good LoRA stacked afterwards
renders in the live preview."""

from __future__ import annotations

from drops import try_drop
from types import SimpleNamespace

import pytest
from bad_input_files import bad_lora, corpus, good_sd1_tensors

# refused when read: damaged, not safetensors, NaN, another kind, a pickle renamed
UNREADABLE = ("truncated.safetensors", "png_renamed.safetensors", "empty.safetensors",
              "header_not_json.safetensors", "nan_weights.safetensors", "ia3.safetensors",
              "payload_renamed.safetensors")
# good files that do not fit the tiny SD 1.x model: refused when the session loads them
MISFITS = ("wrong_shapes.safetensors", "sdxl_lora.safetensors")
RENDER_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("bad_drops")
    sentinel = root / "SENTINEL"
    loras, _ = corpus(root, sentinel, huge=False)
    good = root / "good" / "good.safetensors"
    good.parent.mkdir()
    save_file(good_sd1_tensors(), str(good))
    return SimpleNamespace(loras=loras, sentinel=sentinel, good=good)


@pytest.fixture
def window(make_window, tiny_model_dir, one_torch_thread):
    window = make_window()
    window.model_picker.choose(tiny_model_dir)
    window.tabs.setCurrentWidget(window.mix_tab)
    window.resize(1280, 800)
    window.show()
    window.mix_tab.preview._timer.setInterval(80)
    return window


def wait_read(qtbot, library, count: int) -> None:
    qtbot.waitUntil(lambda: len(library.items) == count
                    and not any(item.loading for item in library.items), timeout=30_000)


def test_dropped_bad_loras_are_refused_with_their_reason_and_the_mix_still_renders(
        window, qtbot, files):
    tab, panel = window.mix_tab, window.mix_tab.library_panel
    assert try_drop(window, [files.loras / name for name in UNREADABLE + MISFITS]) is not None
    assert window.tabs.currentWidget() is tab  # taken by the Mix tab, not as a dataset
    wait_read(qtbot, tab.library, len(UNREADABLE + MISFITS))

    for name in UNREADABLE:
        path = files.loras / name
        error = tab.library.item(path).error
        assert error and name in error and "Traceback" not in error, error
        assert len(error.splitlines()) >= 2, f"no fix given: {error}"  # what + what to do
        for fragment in bad_lora(name).says:
            assert fragment in error
        panel.select(path)  # what the person sees of the selected file
        assert panel.details.toPlainText() == f"Cannot be used: {error}"
        assert not panel.stack_button.isEnabled()
        assert tab.add_to_stack(path) is False
        assert tab.stack_status.text() == f"{name} cannot be stacked: {error}"
    assert window.session_model.stack == ()
    assert not files.sentinel.exists()

    # a pickled LoRA is not even taken: the drag is refused, nothing reads the file
    assert try_drop(window, [files.loras / "payload.pt", files.loras / "payload.bin"]) is None
    assert len(tab.library.items) == len(UNREADABLE + MISFITS)
    assert not files.sentinel.exists()

    # the window keeps working: the misfits and a good LoRA stacked, the preview renders with
    # the good one and tells why each misfit was left out
    assert try_drop(window, [files.good]) is not None
    wait_read(qtbot, tab.library, len(UNREADABLE + MISFITS) + 1)
    for path in [files.loras / name for name in MISFITS] + [files.good]:
        assert tab.add_to_stack(path)
    tab.preview_check.setChecked(True)
    qtbot.waitUntil(lambda: tab.preview.renders_shown > 0 and not tab.preview.pending
                    and not tab.model.runner.is_running, timeout=RENDER_TIMEOUT_MS)
    session = window.session_model.session
    assert [lo.name for lo in session.loras] == ["good"]
    assert any(m.scaling.get("good") for m in session.pipeline.unet.modules()
               if isinstance(getattr(m, "scaling", None), dict))
    for name in MISFITS:
        path = files.loras / name
        problem = window.session_model.problem(path)
        assert problem and problem.startswith(f"{name} was left out:"), problem
        assert len(problem.splitlines()) >= 2 and "Traceback" not in problem, problem
        for fragment in bad_lora(name).says:
            assert fragment in problem
        assert tab.row(path).problem_label.isVisibleTo(tab)
    assert not tab.row(files.good).problem_label.isVisibleTo(tab)
