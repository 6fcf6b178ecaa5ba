"""Start the studio: a QApplication, the style sheet, and the window, shown at once.

Nothing heavy is imported here: torch and diffusers load later, in worker threads, when a job or
the device probe needs them, so the window appears first.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from lora_studio.core.desktop import DESKTOP_ID
from lora_studio.ui.settings import APP_NAME, ORG_NAME


def style_sheet() -> str:
    """The studio's style sheet (resources/style/studio.qss), or "" when it is missing."""
    try:
        from lora_studio.core.paths import resources_dir

        return (resources_dir() / "style" / "studio.qss").read_text(encoding="utf-8")
    except (OSError, FileNotFoundError):
        return ""


def dark_palette() -> QPalette:
    """The palette the style sheet is drawn on (Fusion uses it for what the sheet leaves out)."""
    palette = QPalette()
    colors = {
        QPalette.Window: "#1e2023", QPalette.WindowText: "#e8eaed", QPalette.Base: "#18191c",
        QPalette.AlternateBase: "#2a2d31", QPalette.ToolTipBase: "#2d3136",
        QPalette.ToolTipText: "#e8eaed", QPalette.Text: "#e8eaed", QPalette.Button: "#2d3136",
        QPalette.ButtonText: "#e8eaed", QPalette.BrightText: "#ff6b6b",
        QPalette.Highlight: "#3b6fd8", QPalette.HighlightedText: "#ffffff",
        QPalette.Link: "#7aa7ff", QPalette.PlaceholderText: "#7d8288", QPalette.Mid: "#4a4f56",
    }
    for role, color in colors.items():
        palette.setColor(role, QColor(color))
    for role in (QPalette.Text, QPalette.ButtonText, QPalette.WindowText):
        palette.setColor(QPalette.Disabled, role, QColor("#6b7075"))
    return palette


def app_icon() -> QIcon:
    """The studio's icon (resources/icons: the SVG and the PNG sizes); empty when missing."""
    icon = QIcon()
    try:
        from lora_studio.core.paths import resources_dir

        folder = resources_dir() / "icons"
    except FileNotFoundError:
        return icon
    for path in sorted(folder.glob("lora-studio*.png")) + sorted(folder.glob("lora-studio.svg")):
        icon.addFile(str(path))
    return icon


def create_application(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication (reused if one exists), named for QSettings, with the studio style and
    icon. The desktop file name (the Wayland app id) and the application name (the X11 WM_CLASS
    class) are what `lora-studio install-desktop`'s entry matches the window by."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv) if argv is not None else sys.argv)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName(DESKTOP_ID)
    app.setWindowIcon(app_icon())
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    app.setStyleSheet(style_sheet())
    return app


def run_app(argv: Sequence[str] | None = None) -> int:
    """Open the studio window and run until it closes; returns the exit code."""
    import os

    from lora_studio.core.quiet import quiet_environment

    if not os.environ.get("LORA_STUDIO_DEBUG"):
        quiet_environment()  # the libraries' load reports stay off the terminal
    app = create_application(argv)
    from lora_studio.ui.main_window import MainWindow

    window = MainWindow()
    window.show()
    _quit_after(window, os.environ.get("LORA_STUDIO_QUIT_AFTER_MS"))
    return app.exec()


def _quit_after(window, value: str | None) -> None:
    """For packaging smoke tests (packaging/smoke_test.sh): with LORA_STUDIO_QUIT_AFTER_MS=N the
    window closes N ms after it is shown, and says so with its tabs on stderr."""
    if not value:
        return
    from PySide6.QtCore import QTimer

    def close() -> None:
        tabs = [window.tabs.tabText(i) for i in range(window.tabs.count())]
        print(f"LORA_STUDIO_QUIT_AFTER_MS: window shown with tabs {tabs}; closing",
              file=sys.stderr, flush=True)
        window.close()

    QTimer.singleShot(max(0, int(value)), close)
