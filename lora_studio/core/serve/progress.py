"""The state of the job the server is running, for `/sdapi/v1/progress` and `/interrupt`.

Fed by the session's events from the rendering thread and read from any request thread, under
its own lock (never the session's, which a render holds). The shape is A1111's
`ProgressResponse`: progress 0..1, eta_relative (seconds), `state` as `shared.state.dict()`
spells it, current_image (the last step's cheap latent preview, base64 PNG) and textinfo.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

from lora_studio.core import events

JOB_NAME = "scripts_txt2img"  # what A1111 calls an API txt2img job


def png_base64(image, parameters: str | None = None) -> str:
    """A PIL image as base64 PNG text, with the A1111 `parameters` chunk when given."""
    from PIL.PngImagePlugin import PngInfo

    from lora_studio.core.generate.pnginfo import PARAMETERS_KEY

    info = None
    if parameters:
        info = PngInfo()
        info.add_text(PARAMETERS_KEY, parameters)
    with io.BytesIO() as out:
        image.save(out, format="PNG", pnginfo=info)
        return base64.b64encode(out.getvalue()).decode("ascii")


class JobProgress:
    """One server's job state (one job at a time; the server's queue lock sees to that)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._control: Any = None
        self._job = ""
        self._job_count = 0
        self._job_no = 0
        self._step = 0
        self._steps = 0
        self._started = 0.0
        self._timestamp = "0"
        self._interrupted = False
        self._preview = None

    def begin(self, control: Any, images: int, steps: int) -> None:
        with self._lock:
            self._control = control
            self._job, self._job_count, self._job_no = JOB_NAME, images, 0
            self._step, self._steps = 0, steps
            self._started = time.time()
            self._timestamp = time.strftime("%Y%m%d%H%M%S")
            self._interrupted = False
            self._preview = None

    @property
    def job_timestamp(self) -> str:
        """When the current (or last) job began, as A1111 writes it (YYYYmmddHHMMSS)."""
        with self._lock:
            return self._timestamp

    def end(self) -> None:
        with self._lock:
            self._control = None
            self._job, self._job_count, self._job_no = "", 0, 0
            self._step, self._steps = 0, 0
            self._preview = None

    def interrupt(self) -> bool:
        """Cancel the running job at its next step; False when none runs."""
        with self._lock:
            if self._control is None:
                return False
            self._interrupted = True
            self._control.cancel()
            return True

    def on_event(self, event: events.Event) -> None:
        """The session's `emit` for the running job."""
        if isinstance(event, events.GenerationStep):
            with self._lock:
                self._job_no = event.image_index
                self._step, self._steps = event.step, event.total_steps or self._steps
                self._preview = event.image
        elif isinstance(event, events.ImageGenerated):
            with self._lock:
                self._job_no = event.index + 1
                self._step = 0

    def report(self, skip_current_image: bool = False) -> dict[str, Any]:
        """A1111's ProgressResponse as a dict."""
        with self._lock:
            state = {
                "skipped": False,
                "interrupted": self._interrupted,
                "stopping_generation": False,
                "job": self._job,
                "job_count": self._job_count,
                "job_timestamp": self._timestamp,
                "job_no": self._job_no,
                "sampling_step": self._step,
                "sampling_steps": self._steps,
            }
            if self._job_count == 0:
                return {"progress": 0.0, "eta_relative": 0.0, "state": state,
                        "current_image": None, "textinfo": None}
            progress = self._job_no / self._job_count
            if self._steps:
                progress += self._step / self._steps / self._job_count
            progress = min(max(progress, 0.01), 1.0)
            elapsed = time.time() - self._started
            preview = None if skip_current_image else self._preview
        return {"progress": progress, "eta_relative": max(elapsed / progress - elapsed, 0.0),
                "state": state, "current_image": png_base64(preview) if preview else None,
                "textinfo": None}
