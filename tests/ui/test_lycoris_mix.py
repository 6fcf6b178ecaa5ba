"""LyCORIS files (LoHa, LoKr, full-difference) dropped on the Mix tab (issue 23): the library
reads each with its kind, they stack, and the live preview renders with all of them loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_files import LYCORIS_LORAS, corpus
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

RENDER_TIMEOUT_MS = 120_000


def drop(window, paths: list[Path]) -> None:
    """Drag `paths` onto the window and drop them, as a person does."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(window.width() / 2, window.height() / 2)
    enter = QDragEnterEvent(pos.toPoint(), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(window, QDropEvent(pos, Qt.CopyAction, mime, Qt.LeftButton,
                                              Qt.NoModifier))


@pytest.fixture
def window(make_window, tiny_model_dir, one_torch_thread):
    window = make_window()
    window.model_picker.choose(tiny_model_dir)
    window.tabs.setCurrentWidget(window.mix_tab)
    window.resize(1280, 800)
    window.show()
    window.mix_tab.preview._timer.setInterval(80)
    return window


def test_dropped_lycoris_files_are_read_stacked_and_rendered(window, qtbot, tmp_path):
    loras, _ = corpus(tmp_path, tmp_path / "SENTINEL", huge=False)
    paths = [loras / entry.name for entry in LYCORIS_LORAS]
    tab = window.mix_tab
    drop(window, paths)
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
