"""The window is the one `lora-studio install-desktop`'s entry names (desktop file name =
Wayland app id, application name = X11 WM_CLASS class = StartupWMClass) and carries the icon;
LORA_STUDIO_QUIT_AFTER_MS closes it by itself, for packaging smoke tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from lora_studio.core import desktop
from lora_studio.ui.app import create_application
from lora_studio.ui.settings import APP_NAME


@pytest.fixture
def studio_app(qapp):
    """`create_application` on the test QApplication, whose style, style sheet, palette, names
    and icon are put back afterwards: the studio's style sheet left on the shared application
    would change every later UI test's widget sizes."""
    saved = (qapp.style().name(), qapp.styleSheet(), qapp.palette(), qapp.windowIcon(),
             qapp.applicationName(), qapp.organizationName(), qapp.applicationDisplayName(),
             qapp.desktopFileName())
    yield create_application([])
    style, sheet, palette, icon, name, org, display, desktop_name = saved
    qapp.setStyle(style)
    qapp.setStyleSheet(sheet)
    qapp.setPalette(palette)
    qapp.setWindowIcon(icon)
    qapp.setApplicationName(name)
    qapp.setOrganizationName(org)
    qapp.setApplicationDisplayName(display)
    qapp.setDesktopFileName(desktop_name)


def test_the_application_carries_the_entry_s_names_and_the_icon(studio_app):
    app = studio_app
    assert app.desktopFileName() == desktop.DESKTOP_ID == "lora-studio"
    assert app.applicationName() == APP_NAME == desktop.WM_CLASS
    sizes = {(size.width(), size.height()) for size in app.windowIcon().availableSizes()}
    assert {(48, 48), (128, 128), (256, 256)} <= sizes
    assert not app.windowIcon().pixmap(64, 64).isNull()


def test_quit_after_ms_closes_the_window_once_shown(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LORA_STUDIO_QUIT_AFTER_MS": "500",
           "LORA_STUDIO_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "lora_studio"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("LORA_STUDIO_QUIT_AFTER_MS: window shown with tabs "
            "['Dataset', 'Train', 'Mix', 'Generate']; closing") in done.stderr, done.stderr
