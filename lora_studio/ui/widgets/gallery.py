"""The Generate tab's pictures: a large image view and a strip of result thumbnails.

`ImageView` paints one pixmap scaled to fit, keeping its aspect ratio, always smoothly (a 32 px
latent preview of the tiny model or a 1024 px render alike). `Gallery` lists the results as
thumbnails, newest run first (a run's images keep their order); `image_selected(entry)` tells
which one was clicked. Pixmaps are made by the caller, in the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QFrame, QListView, QListWidget, QListWidgetItem

THUMB = 96
EntryRole = Qt.UserRole + 1


@dataclass
class GalleryEntry:
    """One generated image: the picture, where it was saved, its seed and A1111 parameters."""

    pixmap: QPixmap
    path: Path | None
    seed: int
    parameters: str = ""


class ImageView(QFrame):
    """A pixmap scaled to fit (aspect kept, smooth), or a centered hint when there is none."""

    def __init__(self, hint: str = "", parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("ImageView")
        self._pixmap = QPixmap()
        self._scaled = QPixmap()  # the pixmap at the size last drawn (scaled once per change)
        self._hint = hint
        self.setMinimumSize(160, 160)

    def pixmap(self) -> QPixmap:
        return self._pixmap

    def set_pixmap(self, pixmap: QPixmap | None) -> None:
        self._pixmap = pixmap if pixmap is not None else QPixmap()
        self._scaled = QPixmap()
        self.update()

    def set_hint(self, text: str) -> None:
        self._hint = text
        self.update()

    def image_rect(self) -> QRectF:
        """Where the picture is drawn (empty without one)."""
        if self._pixmap.isNull():
            return QRectF()
        area = QRectF(self.rect()).adjusted(6, 6, -6, -6)
        size = QSize(self._pixmap.size()).scaled(area.size().toSize(), Qt.KeepAspectRatio)
        rect = QRectF(0, 0, size.width(), size.height())
        rect.moveCenter(area.center())
        return rect

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's API
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#18191c"))
        painter.setPen(QColor("#33373d"))
        painter.drawRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5))
        if self._pixmap.isNull():
            painter.setPen(self.palette().color(QPalette.PlaceholderText))
            painter.drawText(self.rect().adjusted(24, 24, -24, -24),
                             Qt.AlignCenter | Qt.TextWordWrap, self._hint)
            return
        rect = self.image_rect()
        size = rect.size().toSize()
        if self._scaled.size() != size:  # smooth (bilinear) even for a 32 px preview at 400 px
            self._scaled = self._pixmap.scaled(size, Qt.IgnoreAspectRatio,
                                               Qt.SmoothTransformation)
        painter.drawPixmap(rect.topLeft(), self._scaled)


def thumbnail(pixmap: QPixmap, size: int = THUMB) -> QPixmap:
    """`pixmap` scaled (up or down, smoothly) to fit a `size` square."""
    return pixmap.scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation)


class Gallery(QListWidget):
    """Result thumbnails in one scrollable row. `begin_run()` before a run's first `add`, so a
    run's images appear first, in their order."""

    image_selected = Signal(object)  # GalleryEntry

    def __init__(self, parent=None, thumb: int = THUMB) -> None:
        super().__init__(parent)
        self.setObjectName("Gallery")
        self._insert_at = 0
        self.setViewMode(QListView.IconMode)
        self.setFlow(QListView.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Static)
        self.setResizeMode(QListView.Adjust)
        self.setIconSize(QSize(thumb, thumb))
        self.setGridSize(QSize(thumb + 16, thumb + 26))
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scrollbar = self.horizontalScrollBar().sizeHint().height()
        self.setFixedHeight(thumb + 34 + scrollbar)
        self.setStyleSheet("QListWidget#Gallery { background: #18191c; border: 1px solid #33373d;"
                           " border-radius: 6px; }")
        self.currentItemChanged.connect(self._on_current)

    def begin_run(self) -> None:
        self._insert_at = 0

    def add(self, entry: GalleryEntry, select: bool = True) -> QListWidgetItem:
        item = QListWidgetItem(QIcon(thumbnail(entry.pixmap, self.iconSize().width())),
                               str(entry.seed))
        item.setData(EntryRole, entry)
        item.setToolTip(entry.parameters or f"seed {entry.seed}")
        item.setTextAlignment(Qt.AlignHCenter)
        self.insertItem(self._insert_at, item)
        self._insert_at += 1
        if select:
            self.setCurrentItem(item)
            self.scrollToItem(item)
        return item

    def entries(self) -> list[GalleryEntry]:
        """The entries in the order shown."""
        return [self.item(i).data(EntryRole) for i in range(self.count())]

    def current_entry(self) -> GalleryEntry | None:
        item = self.currentItem()
        return item.data(EntryRole) if item is not None else None

    def _on_current(self, current: QListWidgetItem | None, _previous) -> None:
        if current is not None:
            self.image_selected.emit(current.data(EntryRole))
