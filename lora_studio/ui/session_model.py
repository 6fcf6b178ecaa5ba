"""The window's generation model: one long-lived GenerationSession and the LoRA stack.

`SessionModel` is owned by the MainWindow and shared by the Generate tab (renders) and the Mix
tab (edits the stack). Widgets only bind to it; it never touches a widget.

The LoRA stack (GUI thread only) is an ordered list of core's one stack record,
`StackEntry(path, weight, enabled, block_weights, start, name)` (`core.generate.stack`), one per
file (a file is in the stack at most once; its `path` is the handle):

    model.add_lora(path, weight=1.0, enabled=True, name=None) -> StackEntry   (name: file stem)
    model.remove_lora(path)        model.set_weight(path, w)        model.set_enabled(path, on)
    model.set_block_weights(path, BlockWeights | None)      (None, or all ones: every block at w)
    model.set_start(path, share)   (the share of the steps before the LoRA comes in; 0: first)
    model.set_stack([StackEntry, ...])       model.clear_stack()        model.stack -> tuple
    model.entry(path) -> StackEntry | None

Every change emits `stack_changed()`. Changing the stack never touches the pipeline: the next
render applies it (see below), so sliders stay instant even while an image renders.

Base model: `model.base_model` (a spec for `resolve_model`: None = the built-in tiny model, a
diffusers folder, a .safetensors checkpoint); `set_base_model(spec)` drops the session (the
next render loads the new model) and emits `base_model_changed(object)`.

Rendering: `model.generate(request) -> bool` starts a job on the window's single `JobRunner`
(False when another job runs; the runner's `refused` explains). The job, in the worker thread:
creates the GenerationSession on first use (so torch / diffusers are imported there, never at
start-up), hands it a snapshot of the stack taken when Generate was pressed
(`GenerationSession.set_stack`: loads new files, removes dropped ones, applies what differs in
one adapter pass), then calls `session.generate(request, emit, control)`. The job's own events
are re-emitted as
`generation_event(object)` (a `core.events` dataclass, GUI thread; events of other jobs, e.g.
training, are not) and its end as `generation_finished(object)` (Finished / Failed / Cancelled).
`model.cancel()` stops the render after the current step; `model.is_generating` tells whether
one of ours runs. `model.session` is the live GenerationSession or None (read it from the GUI
thread only to inspect, e.g. in tests, never to render).

Previews: `model.generate(request, purpose="preview")` runs the same way, but its events go to
`preview_event(object)` / `preview_finished(object)` instead (the Mix tab's live preview), so a
preview never shows up in the Generate tab's gallery.

Grids: `model.run_grid(work) -> bool` runs `work(session, adapters, emit, control)` the same
way, after the stack is applied (`adapters`: {file key: adapter name in the session}); its events
(`GridCellDone` per cell, see `core.generate.grid`) go to `grid_event(object)` and its end to
`grid_finished(object)`. While a grid renders, slider changes wait for the next render (the grid
sets the weights of its own cells).

Sliders without a render: a weight, on/off, block weights or start change is passed on at once
as the whole stack, one way (`GenerationSession.set_stack(stack, load=False)`: the LoRAs the
session has loaded take their values in one adapter pass, so a slider move re-scales only that
LoRA's layers once, no reload; applied when the pipeline is free, never waiting for a render).
New files are loaded by the next render.

Files that do not fit: a LoRA of the stack that the session refuses (another architecture, a
damaged file) is skipped — the render goes on with the others and logs a warning — and is
reported by `model.problem(path)` (the reason) and `problems_changed()`, until it is removed or
loads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from lora_studio.core import events as ev
from lora_studio.core.generate.session import GenerationRequest
from lora_studio.core.generate.stack import StackEntry, unique_entries
from lora_studio.core.lora.block_weights import BlockWeights
from lora_studio.core.paths import path_key
from lora_studio.ui.base_model import normal_spec
from lora_studio.ui.workers import Job, JobRunner

JOB_NAME = "generation"
# What stopping each kind of job keeps (the window's quit question).
_STOPPING_KEEPS = {
    "generate": "The images already finished are saved; the one being drawn is dropped.",
    "preview": "It is a live preview: nothing is lost.",
    "grid": "The grid is saved only when complete: the cells drawn so far are dropped.",
}


class SessionModel(QObject):
    """The long-lived generation session and the LoRA stack (see the module docstring)."""

    stack_changed = Signal()
    base_model_changed = Signal(object)
    generation_event = Signal(object)
    generation_finished = Signal(object)
    preview_event = Signal(object)
    preview_finished = Signal(object)
    grid_event = Signal(object)
    grid_finished = Signal(object)
    problems_changed = Signal()

    def __init__(self, runner: JobRunner, base_model: Any = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._base_model = base_model
        self._stack: list[StackEntry] = []
        self._session = None  # GenerationSession, made in the worker thread
        self._session_spec: Any = None
        self._lock = threading.Lock()  # guards the fields below that the worker writes
        self._adapters: dict[str, str] = {}  # file key -> adapter name in the live session
        self._problems: dict[str, str] = {}  # file key -> why the session refused it
        self._ours = False
        self._purpose = "generate"
        runner.event.connect(self._on_event)
        runner.finished.connect(self._on_finished)

    # ------------------------------------------------------------------ base model
    @property
    def runner(self) -> JobRunner:
        return self._runner

    @property
    def base_model(self) -> Any:
        return self._base_model

    def set_base_model(self, spec: Any) -> None:
        """Use another base model; the loaded session is dropped (a render in progress finishes
        on the old one). No-op when `spec` is the current one."""
        spec = normal_spec(spec)
        if spec == normal_spec(self._base_model):
            return
        self._base_model = spec
        with self._lock:
            self._session = None
            self._session_spec = None
            self._adapters.clear()
            had_problems = bool(self._problems)
            self._problems.clear()
        self.base_model_changed.emit(spec)
        if had_problems:
            self.problems_changed.emit()

    @property
    def session(self):
        """The live GenerationSession, or None before the first render / after a model change."""
        with self._lock:
            return self._session

    # ------------------------------------------------------------------ LoRA stack
    @property
    def stack(self) -> tuple[StackEntry, ...]:
        return tuple(self._stack)

    def entry(self, path: str | Path) -> StackEntry | None:
        key = path_key(path)
        return next((e for e in self._stack if path_key(e.path) == key), None)

    def add_lora(self, path: str | Path, weight: float = 1.0, enabled: bool = True,
                 name: str | None = None) -> StackEntry:
        """Append a LoRA file to the stack (or update it when it is already there)."""
        path = Path(path)
        entry = StackEntry(path, weight, enabled, name=name or path.stem)
        if self.entry(path) is not None:
            self._replace(path, name=entry.name, weight=entry.weight, enabled=entry.enabled)
            return self.entry(path)  # type: ignore[return-value]
        self._stack.append(entry)
        self.stack_changed.emit()
        return entry

    def remove_lora(self, path: str | Path) -> None:
        key = path_key(path)
        kept = [e for e in self._stack if path_key(e.path) != key]
        if len(kept) != len(self._stack):
            self._stack = kept
            with self._lock:
                had_problem = self._problems.pop(key, None) is not None
            self.stack_changed.emit()
            if had_problem:
                self.problems_changed.emit()

    def problem(self, path: str | Path) -> str | None:
        """Why the session refused this LoRA file at the last render, or None."""
        with self._lock:
            return self._problems.get(path_key(path))

    def set_weight(self, path: str | Path, weight: float) -> None:
        self._replace(path, weight=float(weight))

    def set_enabled(self, path: str | Path, enabled: bool) -> None:
        self._replace(path, enabled=bool(enabled))

    def set_block_weights(self, path: str | Path, weights: BlockWeights | None) -> None:
        self._replace(path, block_weights=weights)

    def set_start(self, path: str | Path, start: float) -> None:
        self._replace(path, start=float(start))

    def set_stack(self, entries: Iterable[StackEntry]) -> None:
        """Replace the whole stack (order kept; a file listed twice keeps its first entry)."""
        self._stack = unique_entries(entries)
        self.stack_changed.emit()

    def clear_stack(self) -> None:
        self.set_stack([])

    def _replace(self, path: str | Path, **changes: Any) -> None:
        key = path_key(path)
        for i, old in enumerate(self._stack):
            if path_key(old.path) == key:
                new = replace(old, **changes)
                if new != old:
                    self._stack[i] = new
                    self._push_to_session()
                    self.stack_changed.emit()
                return
        raise KeyError(f"{path} is not in the LoRA stack")

    # ------------------------------------------------------------------ rendering
    @property
    def is_generating(self) -> bool:
        return self._ours and self._runner.is_running

    @property
    def is_previewing(self) -> bool:
        return self.is_generating and self._purpose == "preview"

    @property
    def is_rendering_grid(self) -> bool:
        return self.is_generating and self._purpose == "grid"

    def generation_job(self, request: GenerationRequest) -> Job:
        """The job for the runner: the current stack and base model, snapshotted now."""
        return self._stack_job(lambda session, _adapters, emit, control:
                               session.generate(request, emit, control))

    def _stack_job(self, work: Callable[[Any, dict[str, str], ev.Emit, Any], Any]) -> Job:
        stack = self.stack
        spec = self._base_model

        def job(emit: ev.Emit, control) -> Any:
            from lora_studio.core.warmup import import_engine

            import_engine()  # waits for the app's warm-up rather than importing beside it
            session = self._session_for(spec)
            report = session.set_stack(stack)
            adapters, problems = report.adapters, report.problems
            for message in problems.values():
                emit(ev.Log(message, "warning"))
            with self._lock:
                if session is self._session:
                    self._adapters = adapters
                    self._problems = problems
            return work(session, adapters, emit, control)

        return job

    def generate(self, request: GenerationRequest, purpose: str = "generate") -> bool:
        """Start rendering `request` on the runner; False when another job is running.
        `purpose` "preview" sends the events to `preview_event` / `preview_finished`."""
        if purpose not in ("generate", "preview"):
            raise ValueError(f"purpose must be 'generate' or 'preview', not {purpose!r}")
        return self._start(self.generation_job(request), purpose)

    def run_grid(self, work: Callable[[Any, dict[str, str], ev.Emit, Any], Any]) -> bool:
        """Start a grid (see the module docstring); False when another job is running."""
        return self._start(self._stack_job(work), "grid")

    def _start(self, job: Job, purpose: str) -> bool:
        started = self._runner.start(job, JOB_NAME if purpose == "generate" else purpose,
                                     keeps=lambda: _STOPPING_KEEPS[purpose])
        if started:
            self._ours = True
            self._purpose = purpose
        return started

    def _push_to_session(self) -> None:
        """Pass the stack to the live session at once, one way (no render, no reload, never
        waiting for a render: `set_stack(..., load=False)`); only what changed is re-scaled."""
        with self._lock:
            session = self._session
        if session is None or self.is_rendering_grid:
            return  # a grid sets its cells' weights: the next render applies the stack
        session.set_stack(self._stack, load=False)

    def cancel(self) -> None:
        """Stop our render after its current step (no-op when none runs)."""
        if self.is_generating:
            self._runner.cancel()

    def _session_for(self, spec: Any):
        """The session for `spec`, created on first use (in the worker thread)."""
        with self._lock:
            if self._session is not None and self._session_spec == normal_spec(spec):
                return self._session
        from lora_studio.core.generate.session import GenerationSession

        session = GenerationSession(spec)
        with self._lock:
            if normal_spec(spec) == normal_spec(self._base_model):  # still the current model
                self._session, self._session_spec = session, normal_spec(spec)
        return session

    def _signals(self) -> tuple[Signal, Signal]:
        """(event, finished) signals of the running job's purpose."""
        return {"preview": (self.preview_event, self.preview_finished),
                "grid": (self.grid_event, self.grid_finished)}.get(
            self._purpose, (self.generation_event, self.generation_finished))

    def _on_event(self, event: ev.Event) -> None:
        if self._ours:
            self._signals()[0].emit(event)

    def _on_finished(self, terminal: ev.Event) -> None:
        if self._ours:
            self._ours = False
            self._signals()[1].emit(terminal)
            self.problems_changed.emit()
