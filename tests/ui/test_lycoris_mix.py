"""LyCORIS files (LoHa, LoKr, full-difference) dropped on the Mix tab (issue 23): the library
reads each with its kind, they stack, and the live preview renders with all of them loaded."""

from __future__ import annotations

from bad_input_files import LYCORIS_LORAS, corpus
from drops import drop_on
from test_bad_lora_drops import window  # noqa: F401 (fixture: the Mix on the tiny model)

RENDER_TIMEOUT_MS = 120_000


def test_dropped_lycoris_files_are_read_stacked_and_rendered(window, qtbot, tmp_path):
    loras, _ = corpus(tmp_path, tmp_path / "SENTINEL", huge=False)
    paths = [loras / entry.name for entry in LYCORIS_LORAS]
    tab = window.mix_tab
    drop_on(window, paths)
    qtbot.waitUntil(lambda: len(tab.library.items) == len(paths)
                    and not any(item.loading for item in tab.library.items), timeout=30_000)
    kinds = {"loha": "LoHa", "lokr": "LoKr", "full_diff": "full-difference"}
    for path in paths:
        item = tab.library.item(path)
        assert item.error is None, item.error
        assert f" · {kinds[path.stem]} · " in item.summary()
        assert tab.add_to_stack(path)
    tab.preview_check.setChecked(True)
    qtbot.waitUntil(lambda: tab.preview.renders_shown > 0 and not tab.preview.pending
                    and not tab.model.runner.is_running, timeout=RENDER_TIMEOUT_MS)
    session = window.session_model.session
    assert sorted(lo.name for lo in session.loras) == sorted(kinds)
    for path in paths:
        assert window.session_model.problem(path) is None
        assert not tab.row(path).problem_label.isVisibleTo(tab)
