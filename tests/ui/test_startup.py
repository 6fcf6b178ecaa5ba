"""The window appears without importing torch or diffusers (they load later, off the GUI thread)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    from PySide6.QtCore import QSettings
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, sys.argv[1])
    import lora_studio.ui.app as app_module
    app = app_module.create_application([])
    from lora_studio.ui.main_window import MainWindow
    window = MainWindow()
    window.show()
    heavy = [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]
    print("HEAVY:" + ",".join(heavy))
    print("TABS:" + str(window.tabs.count()))
""")


def test_window_opens_without_heavy_imports(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "TABS:4" in out.stdout
    assert "HEAVY:\n" in out.stdout, out.stdout


def test_run_app_is_what_the_cli_opens():
    from lora_studio.ui.app import run_app

    assert callable(run_app)
