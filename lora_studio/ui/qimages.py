"""Pictures cross from a job to the window as QImages made in the job's own thread.

A PIL image in an event (a training preview, a generated image, a latent preview, a grid cell)
becomes a QImage (an RGBA pixel copy) in the worker thread that emitted it (`prepare`, which the
JobRunner's worker calls before queueing the event), so the GUI thread only wraps it in a
QPixmap (`to_pixmap`). QImage, unlike QPixmap, may be made outside the GUI thread. The event
keeps its PIL image (core code and tests read it); the QImage waits in a table keyed by the
image's id until the GUI takes it or the PIL image is freed.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from PySide6.QtGui import QImage, QPixmap

_ready: dict[int, QImage] = {}
_lock = threading.Lock()


def _is_pil(image: Any) -> bool:
    return hasattr(image, "convert") and isinstance(getattr(image, "size", None), tuple)


def _qimage(image: Any) -> QImage:
    from PIL.ImageQt import ImageQt

    return QImage(ImageQt(image.convert("RGBA"))).copy()  # owns its pixels


def prepare(event: Any) -> None:
    """Convert the event's PIL image (if any) now, in this (worker) thread."""
    image = getattr(event, "image", None)
    if not _is_pil(image):
        return
    key = id(image)
    converted = _qimage(image)
    with _lock:
        _ready[key] = converted
    weakref.finalize(image, _forget, key)


def _forget(key: int) -> None:
    with _lock:
        _ready.pop(key, None)


def to_pixmap(image: Any) -> QPixmap:
    """A QPixmap from a PIL image (converted ahead by `prepare` when it came in an event), a
    QImage or a QPixmap. Call in the GUI thread."""
    if isinstance(image, QPixmap):
        return image
    if isinstance(image, QImage):
        return QPixmap.fromImage(image)
    with _lock:
        ready = _ready.pop(id(image), None)
    return QPixmap.fromImage(ready if ready is not None else _qimage(image))


def waiting() -> int:
    """How many converted images wait for the GUI (for tests)."""
    with _lock:
        return len(_ready)
