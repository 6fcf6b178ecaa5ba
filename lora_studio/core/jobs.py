"""Jobs: how the UI (or CLI) steers a running job, and how every job is run.

A job is a callable `job(emit, control)`: it reports through `emit` (events.py dataclasses) and
checks `control` (cancel / pause / sample-now / save-now, set from another thread) between
steps. `run_job` runs one so that it always ends in exactly one Finished / Failed / Cancelled
event; the CLI, the trainer and the window's worker thread all use it.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lora_studio.core import events as ev
from lora_studio.core.errors import StudioError


class JobCancelled(Exception):
    """Raised inside a job by `JobControl.stop_if_cancelled` where a cancel can land between
    steps of long set-up work (caching, loading); `run_job` ends the job Cancelled with this
    message."""


class JobControl:
    """Cancel / pause / sample-now / save-now requests for a running job."""

    def __init__(self, pause_on_divergence: bool = False) -> None:
        # What a diverging training run does: stop with an error (the CLI), or pause and wait
        # for the person's choice (the app: Resume, perhaps after `request_lr_scale`, or Cancel).
        self.pause_on_divergence = pause_on_divergence
        self._lr_scale: float | None = None
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
        if not self._cancel.is_set():  # a cancelled job must never wait again
            self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def request_sample(self) -> None:
        self._sample_now.set()

    def request_save(self) -> None:
        self._save_now.set()

    def request_lr_scale(self, factor: float) -> None:
        """Scale the learning rates by `factor` when the job next asks (after a divergence)."""
        self._lr_scale = factor

    # --- checks (the job's thread) ---
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def stop_if_cancelled(self, message: str = "Cancelled.") -> None:
        """Raise JobCancelled(`message`) when a cancel was requested: for work that has no
        step loop of its own to return from (set-up, caching), checked between its pieces."""
        if self._cancel.is_set():
            raise JobCancelled(message)

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def wait_if_paused(self) -> None:
        self._resume.wait()

    def take_sample_request(self) -> bool:
        hit = self._sample_now.is_set()
        self._sample_now.clear()
        return hit

    def take_lr_scale(self) -> float | None:
        factor, self._lr_scale = self._lr_scale, None
        return factor

    def take_save_request(self) -> bool:
        hit = self._save_now.is_set()
        self._save_now.clear()
        return hit


# ----------------------------------------------------------------------------- running a job
TERMINAL_EVENTS = (ev.Finished, ev.Failed, ev.Cancelled)
# Exit codes of a CLI command for each way a job ends.
EXIT_FINISHED, EXIT_UNEXPECTED, EXIT_STUDIO_ERROR, EXIT_CANCELLED = 0, 1, 2, 130

Job = Callable[[ev.Emit, JobControl], Any]


@dataclass
class JobOutcome:
    """How a job ended: its one terminal event, the CLI exit code, what it returned."""

    terminal: ev.Event
    code: int
    result: Any = None


def failed_event(exc: BaseException, doing: str = "") -> ev.Failed:
    """A Failed event for an exception: a message a person can act on, the traceback behind it.
    `doing` names the job in an unexpected error's message ("Training")."""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, StudioError):
        return ev.Failed(message=exc.user_message(), details=details)
    what = f"{doing} stopped by an unexpected error" if doing else "Unexpected error"
    return ev.Failed(message=f"{what}: {type(exc).__name__}: {exc}\n"
                             "See the details; if it looks like a bug, please report it with them.",
                     details=details)


def _default_ending(result: Any, control: JobControl) -> ev.Event:
    if control.cancelled:
        return ev.Cancelled(message="Cancelled.")
    return ev.Finished(result=result)


def run_job(job: Job, emit: ev.Emit, control: JobControl | None = None, *,
            ending: Callable[[Any, JobControl], ev.Event] = _default_ending, doing: str = "",
            interrupted: str = "Stopped.") -> JobOutcome:
    """Run `job(emit, control)` so that it ends in exactly one terminal event (Finished, Failed
    or Cancelled), emitted last and returned; never raises for the job's failure. Events after
    the terminal one are dropped. A job that returns without a terminal event ends as
    `ending(result, control)` says; a JobCancelled ends Cancelled with its message (130); a
    StudioError fails with its message (exit code 2), a
    KeyboardInterrupt (a second Ctrl+C) cancels with `interrupted` (130), anything else fails as
    an unexpected error with its traceback in `details` (1). The CLI, the trainer and the
    window's worker thread all run jobs through here."""
    control = control or JobControl()
    ended: list[ev.Event] = []

    def guarded(event: ev.Event) -> None:
        if ended:  # nothing after the end: a job that ends twice is a bug
            return
        if isinstance(event, TERMINAL_EVENTS):
            ended.append(event)
        emit(event)

    code, result = EXIT_FINISHED, None
    try:
        result = job(guarded, control)
    except StudioError as exc:
        guarded(failed_event(exc))
        code = EXIT_STUDIO_ERROR
    except JobCancelled as exc:
        guarded(ev.Cancelled(message=str(exc)))
        code = EXIT_CANCELLED
    except KeyboardInterrupt:
        guarded(ev.Cancelled(message=interrupted))
        code = EXIT_CANCELLED
    except BaseException as exc:  # noqa: BLE001 - every failure must end the job visibly
        guarded(failed_event(exc, doing))
        code = EXIT_UNEXPECTED
    else:
        if not ended:
            guarded(ending(result, control))
    terminal = ended[0]
    if code == EXIT_FINISHED and not isinstance(terminal, ev.Finished):
        code = EXIT_CANCELLED if isinstance(terminal, ev.Cancelled) else EXIT_STUDIO_ERROR
    return JobOutcome(terminal, code, result)


# The name DESIGN.md uses for the simplest case.
CancelToken = JobControl
