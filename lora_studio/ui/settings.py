"""Where the window keeps its state (geometry, last folder, current tab): one QSettings file."""

from __future__ import annotations

from PySide6.QtCore import QSettings

APP_NAME = "LoRA Studio"
ORG_NAME = "LoRA Studio"


def studio_settings() -> QSettings:
    """The user's settings, an INI file in the user config folder (QSettings.setPath moves it;
    tests point it at a temp folder)."""
    return QSettings(QSettings.IniFormat, QSettings.UserScope, ORG_NAME, APP_NAME)
