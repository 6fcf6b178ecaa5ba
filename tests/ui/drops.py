"""Dragging files onto a widget and dropping them, as a file manager does (the UI tests' one
copy of it)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication


def try_drop(widget, paths: list[Path]) -> QDropEvent | None:
    """Drag `paths` over the middle of `widget` and drop them; None when it refuses the drag
    (then nothing is dropped)."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    enter = QDragEnterEvent(pos.toPoint(), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return None
    drop = QDropEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop


def drop_on(widget, paths: list[Path]) -> QDropEvent:
    """`try_drop`, which the widget must accept."""
    drop = try_drop(widget, paths)
    assert drop is not None, f"{type(widget).__name__} refused the drag of {paths}"
    return drop
