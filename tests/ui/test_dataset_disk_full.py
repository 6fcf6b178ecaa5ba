"""A caption saved onto a full disk: the Dataset tab says which disk is full and what to do,
and the edit stays (in the editor, on its image) to be saved once there is room."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from lora_studio.core import fileio
from lora_studio.ui.tabs.dataset_tab import DatasetTab
from lora_studio.ui.widgets.error_dialog import ErrorDialog


def full_disk(tmp: Path, target: Path) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))


@pytest.fixture
def tab(qtbot, settings, dataset_dir):
    tab = DatasetTab(settings)
    qtbot.addWidget(tab)
    tab.resize(1200, 800)
    tab.show()
    tab.load_folder(dataset_dir)
    qtbot.waitUntil(lambda: tab.report is not None and not tab.is_scanning, timeout=30_000)
    yield tab
    tab.shutdown()


def row_of(tab: DatasetTab, name: str) -> int:
    return next(r for r in range(tab.model.rowCount()) if tab.model.entry(r).path.name == name)


def error_dialogs(tab: DatasetTab) -> list[str]:
    return [d.message_label.text() for d in tab.findChildren(ErrorDialog) if d.isVisible()]


def test_a_caption_saved_on_a_full_disk_is_kept_to_save_again(qtbot, tab, dataset_dir,
                                                              monkeypatch):
    caption = dataset_dir / "img_0.txt"
    row = row_of(tab, "img_0.png")
    tab.select_row(row)
    tab.caption_edit.selectAll()
    qtbot.keyClicks(tab.caption_edit, "zqstar, a red star, new words")
    monkeypatch.setattr(fileio, "write_fault_hook", full_disk)

    qtbot.mouseClick(tab.save_button, Qt.LeftButton)
    [message] = error_dialogs(tab)
    assert "Could not save the caption of img_0.png" in message
    assert f"The disk holding {dataset_dir} is full" in message and "Free some space" in message
    assert caption.read_text(encoding="utf-8") == "zqstar, a star number 0"  # unchanged
    assert tab.editor.modified and tab.caption_edit.toPlainText() == \
        "zqstar, a red star, new words"

    tab.select_row(row_of(tab, "img_1.png"))  # moving on saves first: it cannot, so it stays
    assert tab.grid.currentIndex().row() == row
    assert tab.caption_edit.toPlainText() == "zqstar, a red star, new words"

    monkeypatch.setattr(fileio, "write_fault_hook", lambda tmp, target: None)  # room again
    qtbot.mouseClick(tab.save_button, Qt.LeftButton)
    assert caption.read_text(encoding="utf-8") == "zqstar, a red star, new words"
    assert not tab.editor.modified
