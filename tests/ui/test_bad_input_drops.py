"""Bad images and captions (tests/bad_input_corpus.py) dropped on the studio window: the Dataset
tab lists each skipped file with its reason, no error dialog or traceback appears, and the
window goes on working (a good folder dropped next opens as usual)."""

from __future__ import annotations

from drops import drop_on

from PySide6.QtWidgets import QApplication

from bad_input_corpus import SKIPPED, assemble_dataset, entry
from lora_studio.ui.widgets.error_dialog import ErrorDialog

TIMEOUT = 30_000  # the first token count loads the CLIP tokenizer
BAD_IMAGES = ["zero_bytes.png", "truncated_header.jpg", "truncated.png", "text.jpg",
              "one_pixel.png", "animated.webp", "animated.gif", "bomb_20000x20000.png"]
VALID_IMAGES = ["cmyk.jpg", "gray16.png", "palette_transparent.png", "exif_rotated.jpg"]
CAPTIONS = {"chelsea.jpg": "huge.txt", "coffee.jpg": "binary.txt", "rocket.jpg": "utf16.txt",
            "astronaut.jpg": "empty.txt"}


def error_dialogs() -> list[ErrorDialog]:
    return [w for w in QApplication.topLevelWidgets()
            if isinstance(w, ErrorDialog) and w.isVisible()]


def names(tab) -> list[str]:
    return [tab.model.entry(r).path.name for r in range(tab.model.rowCount())]


def test_a_dropped_folder_of_bad_files_lists_each_with_its_reason_and_the_window_goes_on(
        make_window, wait_for_dataset, qtbot, tmp_path):
    folder = assemble_dataset(tmp_path / "bad", images=BAD_IMAGES + VALID_IMAGES,
                              captioned_photos=CAPTIONS)
    window = make_window()
    window.show()

    assert drop_on(window, [folder]).isAccepted()
    trained = sorted(VALID_IMAGES + ["astronaut.jpg", "chelsea.jpg"])
    wait_for_dataset(window, rows=len(trained), timeout=TIMEOUT)
    tab = window.dataset_tab
    assert sorted(names(tab)) == trained
    text = tab.report_panel.text()
    skipped = {s.path.name: s.reason for s in tab.report.skipped}
    expected = {name: entry(name) for name in BAD_IMAGES}
    expected.update({photo: entry(caption) for photo, caption in CAPTIONS.items()
                     if entry(caption).outcome == SKIPPED})
    assert set(skipped) == set(expected)
    for name, bad in expected.items():
        assert name in text and skipped[name] in text  # each file shown beside its reason
        assert all(fragment in skipped[name] for fragment in bad.says), (name, skipped[name])
    assert f"{len(trained)} images usable · {len(expected)} skipped" in text
    assert "empty caption file" in text  # astronaut.txt

    # the 1 MB caption opens in the editor and in what the model sees
    tab.select_row(names(tab).index("chelsea.jpg"))
    assert tab.caption_edit.toPlainText().startswith("tag 0, tag 1, tag 2")
    tab.caption_tabs.setCurrentWidget(tab.model_sees)
    panel = tab.model_sees
    qtbot.waitUntil(lambda: panel.preview is not None and
                    panel.preview.image_path.name == "chelsea.jpg", timeout=TIMEOUT)
    assert "75 of" in panel.text() and "tokens read" in panel.text()
    shown = panel.caption_label.toPlainText()  # the cut part greyed, but not a megabyte of it
    assert len(shown) < 3_000 and shown.endswith("more characters)")
    assert not error_dialogs()

    good = assemble_dataset(tmp_path / "good", photos=["coffee.jpg", "rocket.jpg"])
    assert drop_on(window, [good]).isAccepted()
    wait_for_dataset(window, rows=2, timeout=TIMEOUT)
    assert names(tab) == ["coffee.jpg", "rocket.jpg"]
    assert "2 images usable · 0 skipped" in tab.report_panel.text()
    assert not error_dialogs()


def test_a_dropped_folder_with_nothing_usable_says_what_to_do(make_window, wait_for_dataset,
                                                              tmp_path):
    folder = assemble_dataset(tmp_path / "bad", images=BAD_IMAGES)
    window = make_window()
    window.show()

    assert drop_on(window, [folder / "text.jpg"]).isAccepted()  # a file: its folder opens
    wait_for_dataset(window, rows=0, timeout=TIMEOUT)
    text = window.dataset_tab.report_panel.text()
    assert "Nothing usable: every image was skipped. Fix or replace the files listed above." \
        in text
    assert all(name in text for name in BAD_IMAGES)
    assert not error_dialogs()
