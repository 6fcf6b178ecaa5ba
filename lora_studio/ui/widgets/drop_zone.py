"""Dropping files on the window: which folder a drop means, and the empty-state drop target."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QPainter, QPalette, QPen
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from lora_studio.core.dataset import IMAGE_EXTENSIONS


def local_paths(mime: QMimeData) -> list[Path]:
    """The local files and folders a drag carries (web links and the like are left out)."""
    if not mime.hasUrls():
        return []
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]


def dataset_folder_for(paths: list[Path]) -> Path | None:
    """The dataset folder a drop means: the first folder dropped, else the folder of the first
    image file dropped. None when the drop holds neither."""
    for path in paths:
        if path.is_dir():
            return path
    for path in paths:
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            return path.parent
    return None


class PathDropMixin:
    """Drag-and-drop for a widget that takes some local files: it defines
    `accepts_drop(paths) -> bool` and `drop_paths(paths)` (and calls setAcceptDrops(True))."""

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's API
        if self.accepts_drop(local_paths(event.mimeData())):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's API
        paths = local_paths(event.mimeData())
        if self.accepts_drop(paths):
            self.drop_paths(paths)
            event.acceptProposedAction()
        else:
            event.ignore()


class DropHint(QWidget):
    """The empty state of the Dataset tab: a dashed drop target with an "Open folder…" button."""

    open_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DropHint")
        self._highlight = False
        title = QLabel("Drop a folder of images here")
        title.setObjectName("DropHintTitle")
        title.setAlignment(Qt.AlignCenter)
        body = QLabel("PNG, JPEG, WebP or BMP, with optional captions beside them\n"
                      "(star_01.png → star_01.txt). Dropping image files opens their folder.")
        body.setObjectName("DropHintBody")
        body.setAlignment(Qt.AlignCenter)
        body.setWordWrap(True)
        button = QPushButton("Open folder…")
        button.setObjectName("PrimaryButton")
        button.clicked.connect(self.open_requested)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(48, 48, 48, 48)
        layout.addStretch(1)
        layout.addWidget(title)
        layout.addWidget(body)
        layout.addSpacing(12)
        layout.addWidget(button, 0, Qt.AlignHCenter)
        layout.addStretch(1)

    def set_highlight(self, on: bool) -> None:
        self._highlight = on
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        color = QColor(self.palette().color(QPalette.Highlight if self._highlight
                                            else QPalette.Mid))
        pen = QPen(color, 2, Qt.DashLine)
        painter.setPen(pen)
        if self._highlight:
            fill = QColor(color)
            fill.setAlpha(30)
            painter.setBrush(fill)
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(16, 16, -16, -16), 12, 12)
