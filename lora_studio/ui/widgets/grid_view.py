"""A grid of images with row and column labels, filled cell by cell (the Mix tab's grids).

`set_grid(row_labels, col_labels, title)` lays out empty cells under a title line;
`set_cell(row, col, pixmap)` fills one. Everything is painted scaled to fit the widget: cells
keep the images' aspect, labels use the widget's font (elided when long; a column label may
have two lines, e.g. "step 1500" / "final"), cells not done yet are dark frames.
`set_highlight(col)` marks one column (a run's best step): its header in the highlight colour
and a frame around its cells.
"""

from __future__ import annotations

from PySide6.QtCore import QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QFrame, QSizePolicy

GAP = 4
MARGIN = 6
MAX_CELL = 512


class GridView(QFrame):
    def __init__(self, hint: str = "", parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("GridView")
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(160, 120)
        self._hint = hint
        self.row_labels: list[str] = []
        self.col_labels: list[str] = []
        self.title = ""
        self.highlight: int | None = None
        self._cells: list[list[QPixmap | None]] = []

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's API
        return QSize(360, 300)

    def set_hint(self, text: str) -> None:
        self._hint = text
        self.update()

    def set_grid(self, row_labels: list[str], col_labels: list[str], title: str = "") -> None:
        self.row_labels, self.col_labels, self.title = list(row_labels), list(col_labels), title
        self._cells = [[None] * len(col_labels) for _ in row_labels]
        self.highlight = None
        self.update()

    def set_highlight(self, col: int | None) -> None:
        self.highlight = col if col is not None and 0 <= col < len(self.col_labels) else None
        self.update()

    def set_cell(self, row: int, col: int, pixmap: QPixmap) -> None:
        self._cells[row][col] = pixmap
        self.update()

    def cell(self, row: int, col: int) -> QPixmap | None:
        return self._cells[row][col]

    def filled(self) -> int:
        return sum(p is not None for row in self._cells for p in row)

    # ------------------------------------------------------------------ geometry
    def _label_width(self) -> int:
        metrics = self.fontMetrics()
        widest = max([metrics.horizontalAdvance(t) for t in self.row_labels] + [0])
        return min(widest + 10, max(60, self.width() // 4))  # long prompts wrap

    def _title_height(self) -> int:
        return self.fontMetrics().height() + 6 if self.title else 0

    def _header_height(self) -> int:
        lines = max([len(t.splitlines()) for t in self.col_labels] + [1])
        return self._title_height() + lines * self.fontMetrics().height() + 6

    def _aspect(self) -> float:
        sample = next((p for row in self._cells for p in row if p is not None), None)
        return sample.height() / sample.width() if sample is not None and sample.width() else 1.0

    def cell_rect(self, row: int, col: int) -> QRect:
        """Where cell (row, col) is painted."""
        left = MARGIN + self._label_width()
        top = MARGIN + self._header_height()
        n_rows, n_cols = max(1, len(self.row_labels)), max(1, len(self.col_labels))
        aspect = self._aspect()
        width = (self.width() - left - MARGIN - GAP * (n_cols - 1)) / n_cols
        height = (self.height() - top - MARGIN - GAP * (n_rows - 1)) / n_rows
        side = max(8, int(min(width, height / aspect, MAX_CELL)))
        return QRect(left + col * (side + GAP), top + row * (int(side * aspect) + GAP), side,
                     int(side * aspect))

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's API
        super().paintEvent(event)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.SmoothPixmapTransform)
        text = self.palette().color(QPalette.WindowText)
        dim = self.palette().color(QPalette.PlaceholderText)
        if not self._cells:
            painter.setPen(dim)
            painter.drawText(self.rect().adjusted(12, 12, -12, -12),
                             Qt.AlignCenter | Qt.TextWordWrap, self._hint)
            return
        metrics = self.fontMetrics()
        left_width = self._label_width() - 8
        painter.setPen(dim)
        painter.drawText(QRect(MARGIN, MARGIN, self.width() - 2 * MARGIN, self._title_height()),
                         Qt.AlignLeft | Qt.AlignTop,
                         metrics.elidedText(self.title, Qt.ElideRight, self.width() - 2 * MARGIN))
        top = MARGIN + self._title_height()
        accent = self.palette().color(QPalette.Highlight)
        for c, label in enumerate(self.col_labels):
            rect = self.cell_rect(0, c)
            painter.setPen(accent if c == self.highlight else text)
            lines = [metrics.elidedText(line, Qt.ElideRight, rect.width())
                     for line in label.splitlines()]
            painter.drawText(QRect(rect.left(), top, rect.width(), self._header_height()),
                             Qt.AlignHCenter | Qt.AlignTop, "\n".join(lines))
        for r, label in enumerate(self.row_labels):
            rect = self.cell_rect(r, 0)
            painter.setPen(text)
            painter.drawText(QRect(MARGIN, rect.top(), left_width, rect.height()),
                             Qt.AlignRight | Qt.AlignVCenter | Qt.TextWordWrap, label)
            for c in range(len(self.col_labels)):
                self._paint_cell(painter, self.cell_rect(r, c), self._cells[r][c])
        if self.highlight is not None and self.row_labels:
            first = self.cell_rect(0, self.highlight)
            last = self.cell_rect(len(self.row_labels) - 1, self.highlight)
            painter.setPen(QPen(accent, 2))
            painter.setBrush(Qt.NoBrush)
            painter.drawRect(first.united(last).adjusted(-2, -2, 1, 1))

    def _paint_cell(self, painter: QPainter, rect: QRect, pixmap: QPixmap | None) -> None:
        if pixmap is None:
            painter.setPen(QColor(90, 94, 100))
            painter.setBrush(QColor(40, 42, 46))
            painter.drawRect(rect.adjusted(0, 0, -1, -1))
            painter.setBrush(Qt.NoBrush)
            return
        painter.drawPixmap(QRectF(rect), pixmap, QRectF(pixmap.rect()))
