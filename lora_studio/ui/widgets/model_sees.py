""""What the model sees" of one image: the bucket-size pixels a training step encodes, the
original with the crop drawn, the bucket, the share of the picture kept, the flip, and the caption
as the text encoder reads it (the part it does not read greyed out).

The pictures arrive as PIL images made in a worker (`dataset_session.preview_of`) and become
QPixmap here, in the GUI thread.
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QImage, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.dataset.preview import shortened
from lora_studio.ui.dataset_work import SeenPreview

CAPTION_HEIGHT = 76  # the caption scrolls beyond about four lines


def pil_to_pixmap(image) -> QPixmap:
    """A PIL image as a QPixmap (GUI thread only)."""
    rgb = image.convert("RGB")
    data = rgb.tobytes("raw", "RGB")
    qimage = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format_RGB888)
    return QPixmap.fromImage(qimage.copy())  # copy: the QImage does not own `data`


class PixmapView(QWidget):
    """Shows a pixmap scaled to fit (never enlarged past 2x), centred; keeps the original."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self.setMinimumSize(48, 48)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_pixmap(self, pixmap: QPixmap | None) -> None:
        self._pixmap = pixmap
        self.update()

    def pixmap(self) -> QPixmap | None:
        """The pixmap at its own size (what was set, not what is drawn)."""
        return self._pixmap

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's API
        return QSize(200, 200)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's API
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().color(QPalette.AlternateBase))
        if self._pixmap is None or self._pixmap.isNull():
            return
        size = self._pixmap.size()
        limit = QSize(min(self.width(), size.width() * 2), min(self.height(), size.height() * 2))
        size.scale(limit, Qt.KeepAspectRatio)
        target = QRect(0, 0, size.width(), size.height())
        target.moveCenter(self.rect().center())
        painter.setRenderHint(QPainter.SmoothPixmapTransform)
        painter.drawPixmap(target, self._pixmap)


def _caption_html(preview: SeenPreview) -> str:
    """The caption as trained, the part the text encoder does not read greyed and struck."""
    read = escape(preview.read_caption) or "<i>(empty caption)</i>"
    if not preview.cut_caption:
        return read
    return (f"{read}<span style='color:#6b7078; text-decoration: line-through'>"
            f"{escape(shortened(preview.cut_caption, 2000))}</span>")  # not all of 1 MB


def _tokens_html(preview: SeenPreview) -> str:
    if not preview.tokens:
        return "Caption as read: empty"
    if not preview.cut_caption:
        return f"Caption as read: {preview.tokens} tokens, all read (the window is " \
               f"{preview.limit})"
    return (f"Caption as read: <span style='color:#e0a050'>{preview.kept} of {preview.tokens} "
            "tokens read, the greyed part is cut</span>")


def describe(preview: SeenPreview) -> str:
    """One line: original size, bucket, share kept, upscaled, flip, epoch."""
    (ow, oh), (bw, bh) = preview.original_size, preview.bucket
    return (f"{ow}×{oh} → bucket <b>{bw}×{bh}</b> · keeps {preview.kept_share:.0%} of the "
            f"picture" + (" · <span style='color:#e0a050'>upscaled</span>" if preview.upscaled
                          else "")
            + (" · mirrored" if preview.flip else " · not mirrored")
            + f" · epoch {preview.epoch + 1}")


class ModelSeesPanel(QWidget):
    """The pixels, the crop on the original, and the caption as read, for one image."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ModelSeesPanel")
        self.pixels_view = PixmapView()
        self.pixels_view.setToolTip("Exactly the pixels a training step encodes (the bucket)")
        self.original_view = PixmapView()
        self.original_view.setToolTip("The original picture; the red box is what is kept")
        self.pixels_title = QLabel("Trains on")
        self.original_title = QLabel("Original, crop drawn")
        for title in (self.pixels_title, self.original_title):
            title.setObjectName("HintLabel")
        self.info_label = QLabel("Select an image to see what training makes of it.")
        self.info_label.setWordWrap(True)
        self.tokens_label = QLabel("")
        self.tokens_label.setObjectName("HintLabel")
        self.caption_label = QTextBrowser()
        self.caption_label.setObjectName("SeenCaption")
        self.caption_label.setMaximumHeight(CAPTION_HEIGHT)
        self.caption_label.setMinimumHeight(24)
        self.caption_label.setFrameShape(QFrame.NoFrame)
        pictures = QGridLayout()
        pictures.setSpacing(6)
        pictures.addWidget(self.pixels_title, 0, 0)
        pictures.addWidget(self.original_title, 0, 1)
        pictures.addWidget(self.pixels_view, 1, 0)
        pictures.addWidget(self.original_view, 1, 1)
        pictures.setRowStretch(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addLayout(pictures, 1)
        layout.addWidget(self.info_label)
        layout.addWidget(self.tokens_label)
        layout.addWidget(self.caption_label)
        self.preview: SeenPreview | None = None

    def show_preview(self, preview: SeenPreview | None) -> None:
        """Show `preview` (None: the image is not trained, or nothing is selected)."""
        self.preview = preview
        if preview is None:
            self.show_message("Select an image to see what training makes of it.")
            return
        self.pixels_view.set_pixmap(pil_to_pixmap(preview.pixels))
        self.original_view.set_pixmap(pil_to_pixmap(preview.original))
        bw, bh = preview.bucket
        self.pixels_title.setText(f"Trains on ({bw}×{bh})")
        self.info_label.setText(describe(preview))
        self.tokens_label.setText(_tokens_html(preview))
        self.caption_label.setHtml(_caption_html(preview))

    def show_message(self, text: str) -> None:
        self.preview = None
        self.pixels_view.set_pixmap(None)
        self.original_view.set_pixmap(None)
        self.pixels_title.setText("Trains on")
        self.info_label.setText(text)
        self.tokens_label.setText("")
        self.caption_label.clear()

    def text(self) -> str:
        """What the panel says, as plain text (for tests)."""
        from PySide6.QtGui import QTextDocumentFragment

        parts = [self.pixels_title.text(), self.info_label.text(), self.tokens_label.text()]
        return "\n".join([QTextDocumentFragment.fromHtml(p).toPlainText() for p in parts]
                         + [self.caption_label.toPlainText()])
