"""Dataset tab on a real kohya folder (tests/dataset_fixtures.py): folders and repeats, what
training will do, captions and where they come from, no lost edits, and what the model sees."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QTextCursor, QTextDocument

from dataset_fixtures import CAT_FOLDER, COFFEE_FOLDER, LONG_FOLDER, NOTES_FOLDER, \
    make_kohya_folder
from lora_studio.core.train.config import TrainConfig
from lora_studio.ui.tabs.dataset_tab import DatasetTab

TIMEOUT = 30_000  # the first token count loads the CLIP tokenizer (about a second)


@pytest.fixture
def kohya(tmp_path) -> Path:
    return make_kohya_folder(tmp_path)


@pytest.fixture
def make_tab(qtbot, settings):
    made = []

    def make(**kwargs) -> DatasetTab:
        tab = DatasetTab(kwargs.pop("settings", settings))
        qtbot.addWidget(tab)
        tab.resize(1400, 860)
        tab.show()
        made.append(tab)
        return tab

    yield make
    for tab in made:
        tab.shutdown()


def wait_ready(qtbot, tab: DatasetTab, captions: bool = False) -> None:
    """Until the check is done (and, with `captions`, the tokens are counted)."""
    def done() -> None:
        assert tab.report is not None and not tab.is_scanning
        assert not captions or tab.session.captions_checked

    qtbot.waitUntil(done, timeout=TIMEOUT)


def opened(qtbot, make_tab, folder: Path, captions: bool = False) -> DatasetTab:
    tab = make_tab()
    tab.load_folder(folder)
    wait_ready(qtbot, tab, captions)
    return tab


def row_of(tab: DatasetTab, name: str) -> int:
    rows = [r for r in range(tab.model.rowCount()) if tab.model.entry(r).path.name == name]
    assert rows, name
    return rows[0]


def click_link(qtbot, tab: DatasetTab, text: str, after: str) -> None:
    """Click the link `text` in the report, in the first section headed by `after`."""
    browser = tab.report_panel.details
    document = browser.document()
    heading = document.find(after)
    assert not heading.isNull(), after
    found = document.find(text, heading, QTextDocument.FindCaseSensitively)
    assert not found.isNull(), text
    middle = QTextCursor(document)
    middle.setPosition((found.selectionStart() + found.selectionEnd()) // 2)
    assert middle.charFormat().isAnchor()
    browser.setTextCursor(middle)
    browser.ensureCursorVisible()
    qtbot.mouseClick(browser.viewport(), Qt.LeftButton, pos=browser.cursorRect(middle).center())


# ---------------------------------------------------------------------- folders and repeats
def test_a_kohya_folder_shows_its_folders_and_images_per_epoch(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    folders = tab.folders
    assert folders.isVisible()
    assert [folders.table.item(r, 0).text() for r in range(folders.row_count())] == \
        [CAT_FOLDER, LONG_FOLDER, COFFEE_FOLDER]
    assert [folders.repeats_box(r).value() for r in range(3)] == [10, 1, 3]
    assert folders.caption_edit(0).text() == "chelsea cat"
    text = tab.report_panel.text()
    assert "27 images per epoch" in text
    assert f"{CAT_FOLDER}: 10 × 2 images = 20 per epoch" in text
    assert "Folder notes/ is not a kohya N_name folder" in text  # the report's warnings
    assert "coffee.txt is not UTF-8" in text
    assert tab.model.rowCount() == 5


def test_changing_repeats_checks_again_as_listed_folders_and_is_remembered(
        qtbot, make_tab, kohya, settings):
    tab = opened(qtbot, make_tab, kohya)
    reports = []
    tab.report_changed.connect(reports.append)
    with qtbot.waitSignal(tab.session.scanned, timeout=TIMEOUT):
        tab.folders.repeats_box(1).setValue(4)  # 1_astronaut: 1 -> 4
    assert reports[0] is None  # the Train tab waits for the new check
    report = reports[-1]
    assert report.layout == "subsets"
    assert [(s.path.name, s.repeats) for s in report.subsets] == \
        [(CAT_FOLDER, 10), (LONG_FOLDER, 4), (COFFEE_FOLDER, 3)]
    assert report.images_per_epoch == 20 + 4 + 6
    assert "30 images per epoch" in tab.report_panel.text()
    rocket = next(i for i in report.items if i.image_path.name == "rocket.jpg")
    assert rocket.caption == "chelsea cat"  # the kohya class went with the folder

    again = make_tab(settings=type(settings)(settings.fileName(), settings.format()))
    again.load_folder(kohya)
    wait_ready(qtbot, again)
    assert again.report.layout == "subsets"
    assert again.folders.repeats_box(1).value() == 4


def test_add_and_remove_a_folder(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    with qtbot.waitSignal(tab.session.scanned, timeout=TIMEOUT):
        tab.add_folder(kohya / NOTES_FOLDER)
    assert tab.report.layout == "subsets"
    assert [s.path.name for s in tab.report.subsets] == \
        [CAT_FOLDER, LONG_FOLDER, COFFEE_FOLDER, NOTES_FOLDER]
    assert tab.folders.row_count() == 4
    assert tab.model.rowCount() == 6
    assert row_of(tab, "camera_16x9_gray.jpg") >= 0
    assert "28 images per epoch" in tab.report_panel.text()

    tab.folders.table.selectRow(0)
    assert tab.folders.remove_button.isEnabled()
    with qtbot.waitSignal(tab.session.scanned, timeout=TIMEOUT):
        qtbot.mouseClick(tab.folders.remove_button, Qt.LeftButton)
    assert [s.path.name for s in tab.report.subsets] == [LONG_FOLDER, COFFEE_FOLDER,
                                                          NOTES_FOLDER]
    assert tab.model.rowCount() == 4
    assert tab.report.images_per_epoch == 1 + 6 + 1


# ---------------------------------------------------------------------- what training will do
def test_bucket_table_and_long_caption_link_selects_that_image(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya, captions=True)
    text = tab.report_panel.text()
    assert "384×640\n1\n3" in text and "640×384\n3\n23" in text  # bucket, images, per epoch
    assert "27 steps per epoch" in text and "37.0 epochs" in text
    assert "hubble_9x16.jpg: 360×640 → 384×640" in text  # upscaled
    assert "long caption.jpg: 75 of 123 tokens kept, cut from “american flag”" in text
    assert "3 from caption files, 1 with an empty caption file, 1 from the kohya folder " \
           "class" in text
    assert tab.grid.currentIndex().row() == 0
    click_link(qtbot, tab, "long caption.jpg", "Captions cut at")
    assert tab.grid.currentIndex().row() == row_of(tab, "long caption.jpg")
    assert tab.image_label.text().startswith("<b>long caption.jpg</b>")


def test_a_new_training_config_replans_without_a_new_check(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya, captions=True)
    report = tab.report
    cfg = TrainConfig()
    cfg.train.batch_size = 4
    cfg.dataset.max_token_length = 150
    reports = []
    tab.report_changed.connect(reports.append)
    with qtbot.waitSignal(tab.session.plan_changed, timeout=TIMEOUT):
        tab.set_training_config(cfg)
    assert tab.report is report and reports == []  # planned again, not checked again
    text = tab.report_panel.text()
    assert "512×512 has 1 sample(s) per epoch, fewer than the batch size 4" in text
    assert "batch size 4" in text
    assert "Captions cut at" not in text  # 150 tokens read the whole long caption
    cfg.train.batch_size = 5
    assert tab.session.config.train.batch_size == 4  # the tab keeps its own copy


# ---------------------------------------------------------------------- captions
def test_an_empty_caption_file_says_empty_caption(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    tab.select_row(row_of(tab, "hubble_9x16.jpg"))
    label = tab.image_label.text()
    assert "hubble_9x16.txt" in label and "empty caption" in label
    assert "no .txt" not in label
    assert tab.caption_edit.isEnabled() and tab.caption_edit.toPlainText() == ""


def test_an_uncaptioned_image_says_which_caption_it_trains_with(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    tab.select_row(row_of(tab, "rocket.jpg"))
    assert "no .txt: trains as “chelsea cat” (kohya folder class)" in tab.image_label.text()
    assert "chelsea cat" in tab.caption_edit.placeholderText()


def test_a_long_caption_says_how_many_tokens_are_read(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    tab.select_row(row_of(tab, "long caption.jpg"))
    qtbot.waitUntil(lambda: "123" in tab.editor.token_label.text(), timeout=TIMEOUT)
    assert "75 of 123 tokens read, cut from “american flag”" in tab.editor.token_label.text()


def test_saving_an_empty_caption_writes_an_empty_file(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    tab.select_row(row_of(tab, "rocket.jpg"))
    qtbot.keyClicks(tab.caption_edit, "x")
    qtbot.keyClick(tab.caption_edit, Qt.Key_Backspace)  # edited, and empty
    assert tab.save_button.isEnabled()
    qtbot.mouseClick(tab.save_button, Qt.LeftButton)
    caption = kohya / CAT_FOLDER / "rocket.txt"
    assert caption.exists() and caption.read_bytes() == b""
    assert "empty caption" in tab.image_label.text()
    assert "trains with no caption" in tab.caption_status.text()
    text = tab.report_panel.text()
    assert "2 with an empty caption file" in text
    assert "2 image(s) have an empty caption file" in text  # warned, not silent


def test_typing_and_erasing_is_no_edit(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    tab.select_row(row_of(tab, "rocket.jpg"))
    qtbot.keyClicks(tab.caption_edit, "x")
    qtbot.keyClick(tab.caption_edit, Qt.Key_Backspace)
    tab.select_row(0)  # moving on saves edits, and this was none
    assert not (kohya / CAT_FOLDER / "rocket.txt").exists()
    assert tab.report.items[row_of(tab, "rocket.jpg")].caption == "chelsea cat"


# ---------------------------------------------------------------------- no lost edits
def type_caption(qtbot, tab: DatasetTab, name: str, text: str) -> None:
    tab.select_row(row_of(tab, name))
    tab.caption_edit.selectAll()
    qtbot.keyClicks(tab.caption_edit, text)
    assert tab.editor.modified


def test_an_unsaved_caption_is_saved_by_check_again(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    type_caption(qtbot, tab, "rocket.jpg", "rocket, launch pad, night")
    qtbot.mouseClick(tab.rescan_button, Qt.LeftButton)
    assert (kohya / CAT_FOLDER / "rocket.txt").read_text(encoding="utf-8") == \
        "rocket, launch pad, night"
    wait_ready(qtbot, tab)
    rocket = tab.report.items[row_of(tab, "rocket.jpg")]
    assert rocket.caption == "rocket, launch pad, night"
    assert rocket.caption_source == "caption file"
    assert tab.grid.currentIndex().row() == row_of(tab, "rocket.jpg")  # still selected


def test_an_unsaved_caption_is_saved_when_another_folder_opens(qtbot, make_tab, kohya,
                                                               dataset_dir):
    tab = opened(qtbot, make_tab, kohya)
    type_caption(qtbot, tab, "chelsea.jpg", "cat, tabby")
    tab.load_folder(dataset_dir)
    assert (kohya / CAT_FOLDER / "chelsea.txt").read_text(encoding="utf-8") == "cat, tabby"
    wait_ready(qtbot, tab)
    assert tab.report.root == dataset_dir


def test_an_unsaved_caption_is_saved_when_the_window_closes(make_window, kohya, qtbot,
                                                            wait_for_dataset):
    window = make_window()
    window.show()
    window.open_paths([kohya])
    wait_for_dataset(window, rows=5)
    type_caption(qtbot, window.dataset_tab, "coffee.jpg", "coffee, espresso")
    window.close()
    assert (kohya / COFFEE_FOLDER / "coffee.txt").read_text(encoding="utf-8") == \
        "coffee, espresso"


def test_while_a_folder_is_checked_nothing_can_be_edited(qtbot, make_tab, kohya, dataset_dir):
    tab = opened(qtbot, make_tab, kohya)
    reports = []
    tab.report_changed.connect(reports.append)
    tab.load_folder(dataset_dir)
    tab.load_folder(kohya)  # the first check's result is dropped
    assert tab.is_scanning
    assert reports == [None, None]  # the Train tab disables Start at once
    assert not tab.caption_edit.isEnabled() and not tab.save_button.isEnabled()
    assert not tab.folders.isEnabled() and not tab.rescan_button.isEnabled()
    assert "Checking" in tab.report_panel.text()
    wait_ready(qtbot, tab)
    qtbot.wait(200)
    assert [r.root for r in reports if r is not None] == [kohya]  # only the folder open now
    assert tab.caption_edit.isEnabled()


# ---------------------------------------------------------------------- what the model sees
def test_what_the_model_sees_of_a_9x16_photo(qtbot, make_tab, kohya):
    tab = opened(qtbot, make_tab, kohya)
    tab.select_row(row_of(tab, "hubble_9x16.jpg"))
    tab.caption_tabs.setCurrentWidget(tab.model_sees)
    panel = tab.model_sees
    qtbot.waitUntil(lambda: panel.preview is not None, timeout=TIMEOUT)
    assert panel.pixels_view.pixmap().size() == QSize(384, 640)  # the 512 bucket of 9:16
    text = panel.text()
    assert "360×640 → bucket 384×640" in text and "keeps 94% of the picture" in text
    assert "upscaled" in text and "not mirrored" in text
    assert panel.original_view.pixmap().height() == 640

    tab.select_row(row_of(tab, "long caption.jpg"))
    qtbot.waitUntil(lambda: panel.preview is not None and panel.preview.image_path.name ==
                    "long caption.jpg", timeout=TIMEOUT)
    assert panel.pixels_view.pixmap().size() == QSize(512, 512)
    assert "75 of 123 tokens read" in panel.text()
    assert panel.preview.cut_caption.lstrip(", ").startswith("american flag")


def test_the_window_plans_the_dataset_with_the_train_tabs_settings(make_window, kohya, qtbot,
                                                                    wait_for_dataset):
    window = make_window()
    window.open_paths([kohya])
    wait_for_dataset(window, rows=5)
    tab, form = window.dataset_tab, window.train_tab.form
    report = tab.report
    with qtbot.waitSignal(tab.session.plan_changed, timeout=TIMEOUT):
        form.resolution_spin.setValue(512)
    with qtbot.waitSignal(tab.session.plan_changed, timeout=TIMEOUT):
        form.batch_spin.setValue(3)
    assert tab.report is report  # planned again, not checked again
    assert tab.session.config.dataset.resolution == 512
    hubble = row_of(tab, "hubble_9x16.jpg")
    assert tab.plan.fits[hubble].bucket == (384, 640)
    assert "batch size 3" in tab.report_panel.text()
