"""How the UI (or CLI) steers a running job: a small, thread-safe control object.

A job checks `control.cancelled` between steps; the UI sets flags from another thread.
"""

from __future__ import annotations

import threading


class JobControl:
    """Cancel / pause / sample-now / save-now requests for a running job."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._sample_now = threading.Event()
        self._save_now = threading.Event()

    # --- requests (any thread) ---
    def cancel(self) -> None:
        self._cancel.set()
        self._resume.set()  # a paused job must wake up to notice the cancel

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def request_sample(self) -> None:
        self._sample_now.set()

    def request_save(self) -> None:
        self._save_now.set()

    # --- checks (the job's thread) ---
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def wait_if_paused(self) -> None:
        self._resume.wait()

    def take_sample_request(self) -> bool:
        hit = self._sample_now.is_set()
        self._sample_now.clear()
        return hit

    def take_save_request(self) -> bool:
        hit = self._save_now.is_set()
        self._save_now.clear()
        return hit


# The name DESIGN.md uses for the simplest case.
CancelToken = JobControl
