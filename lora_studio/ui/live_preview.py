"""The Mix tab's live preview: a small fixed-seed render after the stack changes.

Moving a slider changes the SessionModel's stack at once (the session re-scales only that
LoRA's layers, no reload). The preview waits until the changes pause (`delay_ms`, debounced),
then renders the stack as it is *then*. A change while a preview renders cancels that render (it
stops after its current step) and a fresh one follows; an image that finishes for a stack that
has changed since is dropped, never shown: the picture on screen is always the current
stack's. While another job (training, a grid) runs, the preview waits for it and then renders once;
`make_way()` stops a running preview for a job that is about to start.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from lora_studio.core import events as ev
from lora_studio.core.generate.session import GenerationRequest
from lora_studio.ui.session_model import SessionModel

PREVIEW_SEED = 1234
PREVIEW_STEPS = 12
PREVIEW_SAMPLER = "DPM++ 2M"


class LivePreview(QObject):
    image_ready = Signal(object)  # a PIL image of the current stack
    status = Signal(str)

    def __init__(self, model: SessionModel, delay_ms: int = 350,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.prompt = ""
        self.negative = ""
        self.seed = PREVIEW_SEED
        self.steps = PREVIEW_STEPS
        self.renders_started = 0  # counters for tests and the status line
        self.renders_shown = 0
        self.renders_dropped = 0
        self._enabled = False
        self._stopped = False
        self._version = 0  # bumps on every change of what the preview should show
        self._rendering: int | None = None  # the version the running render shows
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self._render)
        model.stack_changed.connect(self.request)
        model.base_model_changed.connect(lambda _spec: self.request())
        model.preview_event.connect(self._on_event)
        model.preview_finished.connect(self._on_finished)
        model.runner.finished.connect(self._on_runner_finished)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def pending(self) -> bool:
        """A render is due (waiting for the pause, for a cancelled one, or for another job)."""
        return self._timer.isActive() or self._rendering != self._version

    def set_enabled(self, on: bool) -> None:
        self._enabled = bool(on) and not self._stopped
        if on:
            self.request()
        else:
            self._timer.stop()
            if self.model.is_previewing:
                self.model.cancel()

    def stop(self) -> None:
        """For good (the window closes): nothing more is rendered, a running preview stops."""
        self._stopped = True
        self._enabled = False
        self._timer.stop()
        if self.model.is_previewing:
            self.model.cancel()

    def make_way(self) -> bool:
        """Stop a running preview so another job (a grid) can start once it has ended; the
        preview renders again after that job. True when a preview was running."""
        if not self.model.is_previewing:
            return False
        self._rendering = None  # due again
        self.model.cancel()
        return True

    def set_prompt(self, prompt: str, negative: str = "") -> None:
        if (prompt, negative) != (self.prompt, self.negative):
            self.prompt, self.negative = prompt, negative
            self.request()

    def request(self) -> None:
        """Something the preview shows changed: render again once changes pause."""
        self._version += 1
        if self._enabled:
            self._timer.start()

    # ------------------------------------------------------------------ internals
    def _render(self) -> None:
        if not self._enabled:
            return
        if self.model.is_previewing:  # stale: stop it; _on_finished starts the fresh one
            self.model.cancel()
            return
        runner = self.model.runner
        if runner.is_running:
            self.status.emit(f"Preview waits for the {runner.job_name} to finish…")
            return
        request = GenerationRequest(self.prompt or "", negative=self.negative,
                                    steps=self.steps, cfg=7.0, seed=self.seed,
                                    sampler=PREVIEW_SAMPLER, count=1)
        version = self._version
        if self.model.generate(request, purpose="preview"):
            self._rendering = version
            self.renders_started += 1
            self.status.emit("Rendering the preview…")

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.ImageGenerated):
            if self._rendering == self._version:
                self.renders_shown += 1
                self.image_ready.emit(event.image)
                self.status.emit(f"Preview: seed {event.seed}, {self.steps} steps.")
            else:
                self.renders_dropped += 1
        elif isinstance(event, ev.Failed):
            self.status.emit(f"Preview failed: {event.message}")

    def _on_finished(self, terminal: ev.Event) -> None:
        if isinstance(terminal, ev.Failed):
            self._rendering = self._version  # do not retry the same stack in a loop
        if self._enabled and self._rendering != self._version:
            self._timer.start()

    def _on_runner_finished(self, _terminal: ev.Event) -> None:
        # another job (training) ended while a preview was due
        if self._enabled and self._rendering != self._version and not self._timer.isActive():
            self._timer.start()
