"""The Dataset tab's Doctor and tag tools on the real kohya folder (tests/dataset_fixtures.py):
the doctor's findings select their image, tag edits write every caption file (atomically, with
the report updated in place, no new check) and Undo puts the exact bytes back."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import Qt

from dataset_fixtures import CAT_FOLDER, COFFEE_FOLDER
from lora_studio.core.dataset import doctor
from lora_studio.ui.tabs.dataset_tab import DatasetTab

TIMEOUT = 30_000


from test_dataset_tab import kohya, make_tab  # noqa: E402,F401 - the tab's own fixtures


def opened(qtbot, make_tab, folder: Path) -> DatasetTab:
    tab = make_tab()
    tab.load_folder(folder)
    qtbot.waitUntil(lambda: tab.report is not None and not tab.is_scanning
                    and tab.session.captions_checked, timeout=TIMEOUT)
    return tab


def row_of(tab: DatasetTab, name: str) -> int:
    rows = [r for r in range(tab.model.rowCount()) if tab.model.entry(r).path.name == name]
    assert rows, name
    return rows[0]


def current_name(tab: DatasetTab) -> str:
    return tab.model.entry(tab.grid.currentIndex().row()).path.name


def captions_on_disk(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.txt"))}


def run_tool(qtbot, tab: DatasetTab, operation: str, text: str, selected: bool = False,
             other: str = "") -> None:
    tools = tab.side_panel.doctor.tools
    tools.set_operation(operation)
    tools.tag_edit.setText(text)
    tools.other_edit.setText(other)
    tools.selected_check.setChecked(selected)
    signal = tab.session.tags_lacking if operation == "missing" else tab.session.tags_edited
    with qtbot.waitSignal(signal, timeout=TIMEOUT):
        qtbot.mouseClick(tools.apply_button, Qt.LeftButton)


def test_the_doctor_lists_duplicates_and_caption_problems_and_selects_their_image(
        qtbot, make_tab, kohya):
    copy = kohya / CAT_FOLDER / "zz_copy.jpg"
    shutil.copyfile(kohya / CAT_FOLDER / "chelsea.jpg", copy)
    tab = opened(qtbot, make_tab, kohya)
    panel = tab.side_panel.doctor
    tab.caption_tabs.setCurrentWidget(panel)
    with qtbot.waitSignal(tab.session.doctor_ready, timeout=TIMEOUT):
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)

    duplicates = panel.finding_items(doctor.EXACT_DUPLICATE)
    assert len(duplicates) == 1 and "zz_copy.jpg" in duplicates[0].text(0)
    empty = panel.finding_items(doctor.EMPTY_CAPTION)
    assert [i.text(0).split(":")[0] for i in empty] == ["hubble_9x16.jpg"]
    long = panel.finding_items(doctor.LONG_CAPTION)
    assert [i.text(0).split(":")[0] for i in long] == ["long caption.jpg"]
    assert panel.tag_table.rowCount() > 30
    assert "finding" in panel.summary.text()

    tab.select_row(row_of(tab, "long caption.jpg"))
    tree = panel.findings
    tree.scrollToItem(duplicates[0])
    qtbot.mouseClick(tree.viewport(), Qt.LeftButton,
                     pos=tree.visualItemRect(duplicates[0]).center())
    assert current_name(tab) == "chelsea.jpg"  # the duplicate group's first image


def test_add_tag_writes_every_caption_file_and_undo_puts_the_exact_bytes_back(
        qtbot, make_tab, kohya):
    before = captions_on_disk(kohya)
    tab = opened(qtbot, make_tab, kohya)
    statuses, scans = [], []
    tab.status.connect(statuses.append)
    tab.session.scan_started.connect(lambda: scans.append(1))
    run_tool(qtbot, tab, "add", "zqcat")

    after = captions_on_disk(kohya)
    assert f"{CAT_FOLDER}/rocket.txt" in after  # created for the image without a caption file
    assert len(after) == 5 and all(data.decode("utf-8").rstrip().endswith(", zqcat") or
                                   data == b"zqcat" for data in after.values())
    assert after[f"{CAT_FOLDER}/rocket.txt"] == b"chelsea cat, zqcat"
    assert "5 captions changed" in statuses[-1]
    assert not scans  # the report was updated in place
    rocket = row_of(tab, "rocket.jpg")
    assert tab.model.entry(rocket).caption == "chelsea cat, zqcat"
    assert tab.report.items[rocket].caption_path is not None
    undo = tab.side_panel.doctor.tools.undo_button
    assert undo.isEnabled()

    with qtbot.waitSignal(tab.session.tags_edited, timeout=TIMEOUT):
        qtbot.mouseClick(undo, Qt.LeftButton)
    assert captions_on_disk(kohya) == before  # cp1252 + CRLF, the empty file: byte for byte
    assert tab.model.entry(rocket).caption == "chelsea cat"
    assert tab.report.items[rocket].caption_path is None
    assert any("coffee.txt is not UTF-8" in w for w in tab.report.warnings)
    assert not undo.isEnabled()
    assert not scans


def test_trigger_word_first_on_the_selected_image_only_saves_the_edit_first(
        qtbot, make_tab, kohya):
    before = captions_on_disk(kohya)
    tab = opened(qtbot, make_tab, kohya)
    tab.select_row(row_of(tab, "coffee.jpg"))
    tab.caption_edit.selectAll()
    qtbot.keyClicks(tab.caption_edit, "latte, cup")  # unsaved: saved before the edit
    run_tool(qtbot, tab, "trigger", "zqstar", selected=True)

    after = captions_on_disk(kohya)
    assert after[f"{COFFEE_FOLDER}/coffee.txt"] == b"zqstar, latte, cup"
    assert {k: v for k, v in after.items() if k != f"{COFFEE_FOLDER}/coffee.txt"} == \
        {k: v for k, v in before.items() if k != f"{COFFEE_FOLDER}/coffee.txt"}
    assert tab.caption_edit.toPlainText() == "zqstar, latte, cup"
    assert "1 caption changed" in tab.side_panel.doctor.tools.message.text()


def test_show_images_lacking_a_tag_lists_them_and_selects_the_first(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    tab.select_row(row_of(tab, "chelsea.jpg"))
    run_tool(qtbot, tab, "missing", "cat")
    listed = tab.side_panel.doctor.tools.lacking_list
    names = {listed.item(i).data(Qt.UserRole).name for i in range(listed.count())}
    assert names == {"rocket.jpg", "coffee.jpg", "hubble_9x16.jpg", "long caption.jpg"}
    assert "4 of 5 images lack 'cat'" in tab.side_panel.doctor.tools.message.text()
    assert current_name(tab) in names
    assert current_name(tab) != "chelsea.jpg"
