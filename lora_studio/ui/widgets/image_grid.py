"""The dataset thumbnail grid: a list model of images + captions, a delegate that draws each
cell (thumbnail, file name, caption), and a QListView in icon mode.

The model holds only what the view shows. Thumbnails arrive later as QImage (decoded off the GUI
thread, see `load_thumbnail`) and become QPixmap here, in the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QImage, QImageReader, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate, QWidget

THUMB_SIZE = 144
CELL = QSize(THUMB_SIZE + 20, THUMB_SIZE + 74)

PathRole = Qt.UserRole + 1
CaptionRole = Qt.UserRole + 2
HasCaptionFileRole = Qt.UserRole + 3


def load_thumbnail(path: Path, size: int = THUMB_SIZE) -> QImage:
    """Decode `path` scaled to fit `size` (EXIF orientation applied). Safe in a worker thread:
    QImage, unlike QPixmap, may be created off the GUI thread. A null QImage on failure."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    original = reader.size()
    if original.isValid() and (original.width() > size or original.height() > size):
        reader.setScaledSize(original.scaled(size, size, Qt.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        return image
    if image.width() > size or image.height() > size:  # a reader that ignores setScaledSize
        image = image.scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation)
    return image


@dataclass
class GridEntry:
    path: Path
    caption: str
    has_caption_file: bool


class ImageGridModel(QAbstractListModel):
    """Images with their captions; `set_thumbnail` fills in a picture when it has loaded."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._entries: list[GridEntry] = []
        self._pixmaps: dict[int, QPixmap] = {}
        self._failed: set[int] = set()

    # --- filling
    def set_entries(self, entries: list[GridEntry]) -> None:
        self.beginResetModel()
        self._entries = list(entries)
        self._pixmaps.clear()
        self._failed.clear()
        self.endResetModel()

    def set_thumbnail(self, row: int, image: QImage) -> None:
        if not 0 <= row < len(self._entries):
            return
        if image.isNull():
            self._failed.add(row)
        else:
            self._pixmaps[row] = QPixmap.fromImage(image)
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.DecorationRole])

    def set_caption(self, row: int, caption: str, has_caption_file: bool) -> None:
        entry = self._entries[row]
        entry.caption = caption
        entry.has_caption_file = has_caption_file
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.DisplayRole, CaptionRole, HasCaptionFileRole])

    # --- reading
    def entry(self, row: int) -> GridEntry:
        return self._entries[row]

    def thumbnails_loaded(self) -> int:
        return len(self._pixmaps) + len(self._failed)

    def thumbnail(self, row: int) -> QPixmap | None:
        return self._pixmaps.get(row)

    def row_of(self, path: Path) -> int:
        for row, entry in enumerate(self._entries):
            if entry.path == path:
                return row
        return -1

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's API
        return 0 if parent.isValid() else len(self._entries)

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._entries):
            return None
        entry = self._entries[index.row()]
        if role == Qt.DisplayRole:
            return entry.path.name
        if role == Qt.DecorationRole:
            return self._pixmaps.get(index.row())
        if role == Qt.ToolTipRole:
            caption = entry.caption or "(no caption)"
            return f"{entry.path.name}\n{caption}"
        if role == PathRole:
            return str(entry.path)
        if role == CaptionRole:
            return entry.caption
        if role == HasCaptionFileRole:
            return entry.has_caption_file
        if role == Qt.UserRole + 10:  # thumbnail failed to decode
            return index.row() in self._failed
        return None


class ImageCellDelegate(QStyledItemDelegate):
    """Draws a cell: a square thumbnail well, the file name, and two lines of caption."""

    def sizeHint(self, option: Any, index: QModelIndex) -> QSize:  # noqa: N802 - Qt's API
        return CELL

    def paint(self, painter: QPainter, option: Any, index: QModelIndex) -> None:
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing)
        palette = option.palette
        rect: QRect = option.rect.adjusted(4, 4, -4, -4)
        selected = bool(option.state & QStyle.State_Selected)
        hovered = bool(option.state & QStyle.State_MouseOver)
        if selected or hovered:
            color = QColor(palette.color(QPalette.Highlight))
            color.setAlpha(90 if selected else 40)
            painter.setPen(palette.color(QPalette.Highlight) if selected else Qt.NoPen)
            painter.setBrush(color)
            painter.drawRoundedRect(rect, 6, 6)

        well = QRect(rect.left() + (rect.width() - THUMB_SIZE) // 2, rect.top() + 6,
                     THUMB_SIZE, THUMB_SIZE)
        pixmap = index.data(Qt.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            size = pixmap.size().scaled(well.size(), Qt.KeepAspectRatio)  # small images grow
            target = QRect(0, 0, size.width(), size.height())
            target.moveCenter(well.center())
            painter.setRenderHint(QPainter.SmoothPixmapTransform)
            painter.drawPixmap(target, pixmap)
        else:
            painter.setPen(Qt.NoPen)
            painter.setBrush(palette.color(QPalette.AlternateBase))
            painter.drawRoundedRect(well, 4, 4)
            painter.setPen(palette.color(QPalette.PlaceholderText))
            failed = bool(index.data(Qt.UserRole + 10))
            painter.drawText(well, Qt.AlignCenter, "cannot preview" if failed else "loading…")

        text_rect = QRect(rect.left() + 6, well.bottom() + 6, rect.width() - 12,
                          rect.bottom() - well.bottom() - 8)
        name_font = painter.font()
        name_font.setBold(True)
        painter.setFont(name_font)
        name_metrics = QFontMetrics(name_font)
        painter.setPen(palette.color(QPalette.HighlightedText if selected else QPalette.Text))
        name = name_metrics.elidedText(str(index.data(Qt.DisplayRole)), Qt.ElideMiddle,
                                       text_rect.width())
        painter.drawText(text_rect, Qt.AlignHCenter | Qt.AlignTop, name)

        caption_font = option.font
        caption_font.setPointSizeF(max(7.0, caption_font.pointSizeF() - 1))
        painter.setFont(caption_font)
        metrics = QFontMetrics(caption_font)
        caption = str(index.data(CaptionRole) or "")
        has_file = bool(index.data(HasCaptionFileRole))
        if not has_file:
            caption = f"{caption} (default)" if caption else "no caption"
            painter.setPen(palette.color(QPalette.PlaceholderText))
        else:
            painter.setPen(palette.color(QPalette.Text))
        caption_rect = text_rect.adjusted(0, name_metrics.height() + 1, 0, 0)
        painter.drawText(caption_rect, Qt.AlignHCenter | Qt.AlignTop,
                         _two_lines(caption, metrics, caption_rect.width()))
        painter.restore()


def _two_lines(text: str, metrics: QFontMetrics, width: int) -> str:
    """`text` wrapped on words into at most two lines, the second elided."""
    words = text.split()
    first = ""
    while words and metrics.horizontalAdvance(f"{first} {words[0]}".strip()) <= width:
        first = f"{first} {words.pop(0)}".strip()
    if not first and words:  # one very long word
        return metrics.elidedText(text, Qt.ElideRight, width)
    rest = " ".join(words)
    return f"{first}\n{metrics.elidedText(rest, Qt.ElideRight, width)}" if rest else first


class ImageGrid(QListView):
    """A grid of image cells, left to right, wrapping, single selection."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ImageGrid")
        self.setViewMode(QListView.IconMode)
        self.setMovement(QListView.Static)
        self.setResizeMode(QListView.Adjust)
        self.setFlow(QListView.LeftToRight)
        self.setWrapping(True)
        self.setUniformItemSizes(True)
        self.setGridSize(CELL + QSize(6, 6))
        self.setSpacing(0)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setMouseTracking(True)
        self.setAcceptDrops(False)  # drops go to the window, which opens the folder
        self.setDragEnabled(False)
        self.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.setItemDelegate(ImageCellDelegate(self))
