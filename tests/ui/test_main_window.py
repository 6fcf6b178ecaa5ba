"""The studio window: tabs, dropping a folder, editing captions, remembering its state."""

from __future__ import annotations

from drops import drop_on

from PySide6.QtCore import Qt

from lora_studio.core.models.tiny_shapes.sample_data import SAMPLE_COUNT
from lora_studio.ui.main_window import TAB_NAMES


def test_window_opens_with_four_tabs_and_status(make_window):
    window = make_window()
    window.show()
    assert window.windowTitle() == "LoRA Studio"
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == list(TAB_NAMES)
    assert window.status.model_label.text() == "Model: Tiny Shapes (built-in)"
    assert window.status.job_label.text() == "Idle"
    assert window.dataset_tab.stack.currentWidget() is window.dataset_tab.drop_hint


def test_dropping_a_folder_fills_grid_and_reports_the_broken_file(make_window, dataset_dir,
                                                                  wait_for_dataset):
    window = make_window()
    window.show()
    window.tabs.setCurrentIndex(2)
    drop = drop_on(window, [dataset_dir])
    assert drop.isAccepted()
    wait_for_dataset(window, rows=4)
    tab = window.dataset_tab
    assert window.tabs.currentWidget() is tab  # the drop brought the Dataset tab forward
    assert tab.stack.currentWidget() is tab.grid
    names = [tab.model.entry(r).path.name for r in range(tab.model.rowCount())]
    assert names == ["img_0.png", "img_1.png", "img_2.png", "img_3.png"]
    assert all(tab.model.thumbnail(r) is not None for r in range(4))  # real pictures loaded
    report = tab.report_panel.text()
    assert "4 images usable · 1 skipped · 1 without caption" in report
    assert "broken.png" in report and "not an image" in report
    assert "img_3.png" in report  # listed under "Without caption"
    assert window.train_tab.dataset_label.text().startswith("stars: 4 images")


def test_dropping_image_files_opens_their_folder(make_window, dataset_dir, wait_for_dataset):
    window = make_window()
    drop_on(window, [dataset_dir / "img_1.png", dataset_dir / "img_2.png"])
    wait_for_dataset(window, rows=4)
    assert window.dataset_tab.folder == dataset_dir


def test_editing_a_caption_writes_the_sidecar_file(make_window, dataset_dir, wait_for_dataset,
                                                   qtbot):
    window = make_window()
    window.show()
    window.open_paths([dataset_dir])
    wait_for_dataset(window, rows=4)
    tab = window.dataset_tab
    tab.select_row(1)
    assert tab.caption_edit.toPlainText() == "zqstar, a star number 1"
    tab.caption_edit.selectAll()
    qtbot.keyClicks(tab.caption_edit, "zqstar, a green star, glowing")
    assert tab.save_button.isEnabled()
    qtbot.mouseClick(tab.save_button, Qt.LeftButton)
    assert (dataset_dir / "img_1.txt").read_text(encoding="utf-8") == \
        "zqstar, a green star, glowing"
    assert tab.model.entry(1).caption == "zqstar, a green star, glowing"  # the grid updated
    assert not tab.save_button.isEnabled()


def test_captioning_an_uncaptioned_image_creates_its_file_on_selection_change(
        make_window, dataset_dir, wait_for_dataset, qtbot):
    window = make_window()
    window.open_paths([dataset_dir])
    wait_for_dataset(window, rows=4)
    tab = window.dataset_tab
    tab.select_row(3)
    assert tab.caption_edit.toPlainText() == ""
    qtbot.keyClicks(tab.caption_edit, "zqstar, a yellow star")
    tab.select_row(0)  # moving on keeps the edit: it is saved, never dropped
    assert (dataset_dir / "img_3.txt").read_text(encoding="utf-8") == "zqstar, a yellow star"
    assert "0 without caption" in tab.report_panel.text()


def test_default_caption_applies_to_uncaptioned_images(make_window, dataset_dir,
                                                        wait_for_dataset, qtbot):
    window = make_window()
    window.open_paths([dataset_dir])
    wait_for_dataset(window, rows=4)
    tab = window.dataset_tab
    tab.trigger_edit.setText("zqstar")
    tab.trigger_edit.editingFinished.emit()
    assert tab.model.entry(3).caption == "zqstar"
    assert tab.model.entry(0).caption == "zqstar, a star number 0"
    assert "default caption “zqstar”" in tab.report_panel.text()


def test_settings_persist_across_windows(make_window, dataset_dir, wait_for_dataset, settings):
    first = make_window()
    first.show()
    first.resize(760, 520)  # inside the 800x600 offscreen screen
    first.open_paths([dataset_dir])
    wait_for_dataset(first, rows=4)
    first.dataset_tab.trigger_edit.setText("zqstar")
    first.dataset_tab.trigger_edit.editingFinished.emit()
    first.tabs.setCurrentIndex(1)
    first.close()

    second = make_window(settings=type(settings)(settings.fileName(), settings.format()),
                         restore_dataset=True)
    assert second.tabs.currentIndex() == 1
    assert (second.width(), second.height()) == (760, 520)
    assert second.dataset_tab.trigger_edit.text() == "zqstar"
    wait_for_dataset(second, rows=4)  # the last folder is opened again
    assert second.dataset_tab.folder == dataset_dir


def test_a_folder_without_images_says_what_to_do(make_window, tmp_path, wait_for_dataset):
    empty = tmp_path / "empty"
    empty.mkdir()
    window = make_window()
    window.open_paths([empty])
    wait_for_dataset(window, rows=0)
    assert "Nothing usable" in window.dataset_tab.report_panel.text()
    assert window.dataset_tab.stack.currentWidget() is window.dataset_tab.drop_hint


def test_device_label_is_filled_in_the_background(make_window, qtbot):
    window = make_window(probe_device=True)
    window.show()
    qtbot.waitUntil(lambda: not window.status.device_label.text().endswith("…"),
                    timeout=60_000)
    text = window.status.device_label.text()
    assert text == "Device: CPU" or text.startswith("Device: CUDA: ")


def test_first_run_opens_the_sample_dataset(make_window, wait_for_dataset):
    """No folder remembered yet: the shipped sample is open, so Start trains right away."""
    from lora_studio.core.paths import sample_dataset_dir

    window = make_window(restore_dataset=True)
    wait_for_dataset(window, rows=SAMPLE_COUNT)
    assert window.dataset_tab.folder == sample_dataset_dir()
    assert "zqstar" in window.dataset_tab.model.entry(0).caption


def test_first_run_says_what_the_built_in_model_is_until_another_folder_opens(
        make_window, wait_for_dataset, dataset_dir):
    window = make_window(restore_dataset=True)
    window.show()
    wait_for_dataset(window, rows=SAMPLE_COUNT)
    banner = window.dataset_tab.banner
    assert banner.isVisible()
    assert "Tiny Shapes" in banner.text() and "toy" in banner.text()
    assert "SD 1.5" in banner.text()  # and what real work uses
    window.open_paths([dataset_dir])
    wait_for_dataset(window, rows=4)
    assert not banner.isVisible()
