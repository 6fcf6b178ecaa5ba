"""The Train tab's "Presets" button: Load preset… / Save preset… as TOML files.

The button only asks for a file (in the user's presets folder) and hands it to the tab's
`load(path)` / `save(path)`; a ConfigError goes to `on_error(exc, title)`, success to
`report(text)` (the run log).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMenu, QPushButton, QWidget

from lora_studio.core.errors import ConfigError
from lora_studio.core.paths import user_data_dir


def presets_dir() -> Path:
    return user_data_dir() / "presets"


class PresetsButton(QPushButton):
    def __init__(self, load: Callable[[str], Any], save: Callable[[str], Any],
                 default_name: Callable[[], str], report: Callable[[str], None],
                 on_error: Callable[[ConfigError, str], None],
                 parent: QWidget | None = None) -> None:
        super().__init__("Presets", parent)
        self._load, self._save, self._default_name = load, save, default_name
        self._report, self._on_error = report, on_error
        self.load_action = QAction("Load preset…", self)
        self.load_action.setToolTip("Load settings from a TOML preset or a config saved "
                                    "beside a trained LoRA.")
        self.load_action.triggered.connect(self._load_dialog)
        self.save_action = QAction("Save preset…", self)
        self.save_action.setToolTip("Save these settings as a TOML preset (it also runs "
                                    "from the command line: lora-studio train FILE).")
        self.save_action.triggered.connect(self._save_dialog)
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        menu.addAction(self.load_action)
        menu.addAction(self.save_action)
        self.setToolTip("Load or save these settings as a TOML preset.")
        self.setMenu(menu)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a training preset",
                                              str(presets_dir()), "Presets (*.toml)")
        if path:
            self._run(self._load, path, "Cannot load the preset", "Loaded")

    def _save_dialog(self) -> None:
        folder = presets_dir()
        folder.mkdir(parents=True, exist_ok=True)
        name = self._default_name() or "preset"
        path, _ = QFileDialog.getSaveFileName(self, "Save the settings as a preset",
                                              str(folder / f"{name}.toml"), "Presets (*.toml)")
        if path:
            self._run(self._save, path if path.endswith(".toml") else path + ".toml",
                      "Cannot save the preset", "Saved")

    def _run(self, action: Callable[[str], Any], path: str, title: str, done: str) -> None:
        try:
            action(path)
        except ConfigError as exc:
            self._on_error(exc, title)
        else:
            self._report(f"{done} preset {path}")
