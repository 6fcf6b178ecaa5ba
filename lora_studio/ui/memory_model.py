"""The Train tab's memory estimate, kept current off the GUI thread.

`request(cfg, arch, buckets)` (the form's settings, the base model's family, the planned bucket
of every image) asks for a new estimate; requests are coalesced for `DEBOUNCE_MS` and then
estimated in a background pool (`core.train.memory` builds meta-device networks and imports
torch: never in the GUI thread). Only the newest request's answer is shown; one that fails
(say, a config that does not validate yet) clears the line rather than showing a stale figure.
No estimate starts before the app's engine warm-up has imported torch (`core/warmup.py`), nor
while the tab is hidden (the newest request waits for `flush`, called when the tab shows).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, QTimer

from lora_studio.ui.widgets.memory_estimate import MemoryEstimateView
from lora_studio.ui.workers import TaskPool

DEBOUNCE_MS = 300
WAIT_FOR_ENGINE_MS = 1000


def estimate_with_advice(cfg: Any, arch: str, buckets: list[tuple[int, int]] | None):
    """(estimate, advice) for the run `cfg` would start (called in a pool thread)."""
    from lora_studio.core.errors import StudioError
    from lora_studio.core.models.loading import resolve_model
    from lora_studio.core.train.memory import estimate_memory, lower_memory_advice
    from lora_studio.core.warmup import import_engine

    import_engine()  # not beside the app's warm-up: transformers is imported once
    try:
        model = resolve_model(cfg.model.base or None)
    except (StudioError, OSError):
        model = None  # the architecture's own configs
    return (estimate_memory(cfg, arch, buckets, model),
            lower_memory_advice(cfg, arch, buckets, model))


class MemoryEstimateModel(QObject):
    def __init__(self, view: MemoryEstimateView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.view = view
        self._pool = TaskPool(max_threads=1, parent=self)
        self._pending: tuple | None = None
        self._latest = 0  # the newest request's number; older answers are dropped
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._estimate)

    def request(self, cfg: Any, arch: str, buckets: list[tuple[int, int]] | None) -> None:
        self._pending = (cfg, arch, buckets)
        self._latest += 1
        self._timer.start()

    def _estimate(self) -> None:
        from lora_studio.core.warmup import engine_imported

        if self._pending is None:
            return
        owner = self.parent()
        if owner is not None and not owner.isVisible():
            return  # kept until the tab shows (`flush`): no work for a screen nobody sees
        if not engine_imported():  # the app's warm-up is still importing: ask again soon
            self._timer.start(WAIT_FOR_ENGINE_MS)
            return
        self._timer.setInterval(DEBOUNCE_MS)
        args, self._pending, number = self._pending, None, self._latest
        self._pool.submit(lambda: estimate_with_advice(*args),
                          lambda result: self._show(number, result),
                          lambda exc: self._failed(number))

    def _show(self, number: int, result) -> None:
        if number == self._latest:
            self.view.show_estimate(*result)

    def _failed(self, number: int) -> None:
        if number == self._latest:
            self.view.clear()

    def flush(self) -> None:
        """Estimate a request kept while the tab was hidden (the tab calls it when shown)."""
        if self._pending is not None and not self._timer.isActive():
            self._timer.start(DEBOUNCE_MS)

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Until the estimate asked for last is shown (for tests and screenshots)."""
        from PySide6.QtCore import QCoreApplication, QDeadlineTimer

        if self._timer.isActive() and self._pending is not None:
            from lora_studio.core.warmup import import_engine

            import_engine()
            self._timer.stop()
            self._estimate()
        deadline = QDeadlineTimer(timeout_ms)
        while not deadline.hasExpired() and not self._pool.wait(20):
            QCoreApplication.processEvents()
        QCoreApplication.processEvents()
        return not deadline.hasExpired()

    def shutdown(self) -> None:
        self._timer.stop()
        self._pool.shutdown()
