"""The window is the one `lora-studio install-desktop`'s entry names (desktop file name =
Wayland app id, application name = X11 WM_CLASS class = StartupWMClass) and carries the icon;
LORA_STUDIO_QUIT_AFTER_MS closes it by itself, for packaging smoke tests."""

from __future__ import annotations

import os
import subprocess
import sys

from lora_studio.core import desktop
from lora_studio.ui.app import create_application
from lora_studio.ui.settings import APP_NAME


def test_the_application_carries_the_entry_s_names_and_the_icon():
    app = create_application([])
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
