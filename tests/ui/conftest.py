"""UI test setup: offscreen Qt, settings in a temp INI file, and small datasets on disk."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from lora_studio.ui.settings import studio_settings  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory) -> Path:
    """Every test writes its QSettings into its own temp folder, never the user's."""
    folder = tmp_path_factory.mktemp("qsettings")
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(folder))
    return folder


@pytest.fixture
def settings() -> QSettings:
    return studio_settings()


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    """4 usable images (one without a caption), one broken "image" and a notes file."""
    root = tmp_path / "stars"
    root.mkdir()
    colors = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    for i, color in enumerate(colors):
        Image.new("RGB", (80, 96), color).save(root / f"img_{i}.png")
        if i < 3:
            (root / f"img_{i}.txt").write_text(f"zqstar, a star number {i}", encoding="utf-8")
    (root / "broken.png").write_bytes(b"this is not a png at all")
    (root / "notes.md").write_text("hello", encoding="utf-8")
    return root


@pytest.fixture
def make_window(qtbot, settings):
    """MainWindow factory: no device probe (torch) and no dataset restore unless asked."""
    from lora_studio.ui.main_window import MainWindow

    made = []

    def make(**kwargs) -> MainWindow:
        kwargs.setdefault("probe_device", False)
        kwargs.setdefault("restore_dataset", False)
        window = MainWindow(kwargs.pop("settings", settings), **kwargs)
        qtbot.addWidget(window)
        made.append(window)
        return window

    yield make
    for window in made:
        window.shutdown()


@pytest.fixture
def wait_for_dataset(qtbot):
    """`wait_for_dataset(window, rows)`: wait until the scan is done and thumbnails loaded."""

    def wait(window, rows: int | None = None, timeout: int = 10_000) -> None:
        tab = window.dataset_tab

        def done() -> None:
            assert tab.report is not None and not tab.is_scanning
            if rows is not None:
                assert tab.model.rowCount() == rows
            assert tab.model.thumbnails_loaded() == tab.model.rowCount()

        qtbot.waitUntil(done, timeout=timeout)

    return wait
