"""Where the window keeps its state (geometry, last folder, current tab): one QSettings file."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings

APP_NAME = "LoRA Studio"
ORG_NAME = "LoRA Studio"


def studio_settings() -> QSettings:
    """The user's settings, an INI file in the user config folder (QSettings.setPath moves it;
    tests point it at a temp folder). Qt writes it atomically (QSaveFile), under a lock file."""
    settings = QSettings(QSettings.IniFormat, QSettings.UserScope, ORG_NAME, APP_NAME)
    drop_dead_lock(Path(settings.fileName() + ".lock"))
    return settings


def drop_dead_lock(lock: Path) -> bool:
    """Remove `lock` when it is an empty Qt lock file nobody holds; True when removed.

    A kill in the instant between Qt creating `<settings>.lock` and writing who holds it leaves
    it empty; Qt cannot tell that holder is gone and waits until the file is 30 s old (the window
    frozen meanwhile) before calling it stale. A live holder keeps an flock on its lock file
    from the moment it creates it, so an empty one that can be flock-ed is such a leftover."""
    try:
        import fcntl
    except ImportError:  # Windows: Qt's lock files there are not flock-ed
        return False
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False  # no lock file: the usual case
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_size == 0:
            lock.unlink(missing_ok=True)
            return True
    except OSError:  # held by a live process (or not ours to remove)
        pass
    finally:
        os.close(fd)
    return False
