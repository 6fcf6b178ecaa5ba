"""The window's generation model: one long-lived GenerationSession and the LoRA stack.

`SessionModel` is owned by the MainWindow and shared by the Generate tab (renders) and the Mix
tab (edits the stack). Widgets only bind to it; it never touches a widget.

The LoRA stack (GUI thread only) is an ordered list of `LoraEntry(path, name, weight, enabled)`,
one per file (a file is in the stack at most once; its `path` is the handle):

    model.add_lora(path, weight=1.0, enabled=True, name=None) -> LoraEntry   (name: file stem)
    model.remove_lora(path)        model.set_weight(path, w)        model.set_enabled(path, on)
    model.set_stack([LoraEntry, ...])        model.clear_stack()        model.stack -> tuple
    model.entry(path) -> LoraEntry | None

Every change emits `stack_changed()`. Changing the stack never touches the pipeline: the next
render applies it (see below), so sliders stay instant even while an image renders.

Base model: `model.base_model` (a spec for `resolve_model`: None = the built-in tiny model, a
diffusers folder, a .safetensors checkpoint); `set_base_model(spec)` drops the session (the
next render loads the new model) and emits `base_model_changed(object)`.

Rendering: `model.generate(request) -> bool` starts a job on the window's single `JobRunner`
(False when another job runs; the runner's `refused` explains). The job, in the worker thread:
creates the GenerationSession on first use (so torch / diffusers are imported there, never at
start-up), applies a snapshot of the stack taken when Generate was pressed — `add_lora` for new
files, `remove_lora` for dropped ones, `set_weight` / `set_enabled` only where they differ — then
calls `session.generate(request, emit, control)`. The job's own events are re-emitted as
`generation_event(object)` (a `core.events` dataclass, GUI thread; events of other jobs, e.g.
training, are not) and its end as `generation_finished(object)` (Finished / Failed / Cancelled).
`model.cancel()` stops the render after the current step; `model.is_generating` tells whether
one of ours runs. `model.session` is the live GenerationSession or None (read it from the GUI
thread only to inspect, e.g. in tests, never to render).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from lora_studio.core import events as ev
from lora_studio.core.generate.session import GenerationRequest
from lora_studio.ui.workers import Job, JobRunner

JOB_NAME = "generation"


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA of the stack: the file, the name shown (and given to the session), its strength
    and whether it is switched on."""

    path: Path
    name: str
    weight: float = 1.0
    enabled: bool = True


class SessionModel(QObject):
    """The long-lived generation session and the LoRA stack (see the module docstring)."""

    stack_changed = Signal()
    base_model_changed = Signal(object)
    generation_event = Signal(object)
    generation_finished = Signal(object)

    def __init__(self, runner: JobRunner, base_model: Any = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._base_model = base_model
        self._stack: list[LoraEntry] = []
        self._session = None  # GenerationSession, made in the worker thread
        self._session_spec: Any = None
        self._lock = threading.Lock()  # guards _session / _session_spec across threads
        self._ours = False
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
        spec = _normal_spec(spec)
        if spec == _normal_spec(self._base_model):
            return
        self._base_model = spec
        with self._lock:
            self._session = None
            self._session_spec = None
        self.base_model_changed.emit(spec)

    @property
    def session(self):
        """The live GenerationSession, or None before the first render / after a model change."""
        with self._lock:
            return self._session

    # ------------------------------------------------------------------ LoRA stack
    @property
    def stack(self) -> tuple[LoraEntry, ...]:
        return tuple(self._stack)

    def entry(self, path: str | Path) -> LoraEntry | None:
        key = _key(path)
        return next((e for e in self._stack if _key(e.path) == key), None)

    def add_lora(self, path: str | Path, weight: float = 1.0, enabled: bool = True,
                 name: str | None = None) -> LoraEntry:
        """Append a LoRA file to the stack (or update it when it is already there)."""
        path = Path(path)
        entry = LoraEntry(path, name or path.stem, float(weight), bool(enabled))
        if self.entry(path) is not None:
            self._replace(path, name=entry.name, weight=entry.weight, enabled=entry.enabled)
            return self.entry(path)  # type: ignore[return-value]
        self._stack.append(entry)
        self.stack_changed.emit()
        return entry

    def remove_lora(self, path: str | Path) -> None:
        key = _key(path)
        kept = [e for e in self._stack if _key(e.path) != key]
        if len(kept) != len(self._stack):
            self._stack = kept
            self.stack_changed.emit()

    def set_weight(self, path: str | Path, weight: float) -> None:
        self._replace(path, weight=float(weight))

    def set_enabled(self, path: str | Path, enabled: bool) -> None:
        self._replace(path, enabled=bool(enabled))

    def set_stack(self, entries: Iterable[LoraEntry]) -> None:
        """Replace the whole stack (order kept; a file listed twice keeps its first entry)."""
        seen: set[str] = set()
        stack = []
        for entry in entries:
            if _key(entry.path) not in seen:
                seen.add(_key(entry.path))
                stack.append(replace(entry, path=Path(entry.path)))
        self._stack = stack
        self.stack_changed.emit()

    def clear_stack(self) -> None:
        self.set_stack([])

    def _replace(self, path: str | Path, **changes: Any) -> None:
        key = _key(path)
        for i, old in enumerate(self._stack):
            if _key(old.path) == key:
                new = replace(old, **changes)
                if new != old:
                    self._stack[i] = new
                    self.stack_changed.emit()
                return
        raise KeyError(f"{path} is not in the LoRA stack")

    # ------------------------------------------------------------------ rendering
    @property
    def is_generating(self) -> bool:
        return self._ours and self._runner.is_running

    def generation_job(self, request: GenerationRequest) -> Job:
        """The job for the runner: the current stack and base model, snapshotted now."""
        stack = self.stack
        spec = self._base_model

        def job(emit: ev.Emit, control) -> Any:
            session = self._session_for(spec)
            apply_stack(session, stack)
            return session.generate(request, emit, control)

        return job

    def generate(self, request: GenerationRequest) -> bool:
        """Start rendering `request` on the runner; False when another job is running."""
        started = self._runner.start(self.generation_job(request), JOB_NAME)
        if started:
            self._ours = True
        return started

    def cancel(self) -> None:
        """Stop our render after its current step (no-op when none runs)."""
        if self.is_generating:
            self._runner.cancel()

    def _session_for(self, spec: Any):
        """The session for `spec`, created on first use (in the worker thread)."""
        with self._lock:
            if self._session is not None and self._session_spec == _normal_spec(spec):
                return self._session
        from lora_studio.core.generate.session import GenerationSession

        session = GenerationSession(spec)
        with self._lock:
            if _normal_spec(spec) == _normal_spec(self._base_model):  # still the current model
                self._session, self._session_spec = session, _normal_spec(spec)
        return session

    def _on_event(self, event: ev.Event) -> None:
        if self._ours:
            self.generation_event.emit(event)

    def _on_finished(self, terminal: ev.Event) -> None:
        if self._ours:
            self._ours = False
            self.generation_finished.emit(terminal)


def apply_stack(session, stack: Iterable[LoraEntry]) -> None:
    """Make `session`'s LoRAs match `stack`, changing only what differs (worker thread)."""
    wanted = {_key(e.path): e for e in stack}
    loaded = {_key(lo.path): lo for lo in session.loras}
    for key, lora in loaded.items():
        if key not in wanted:
            session.remove_lora(lora.name)
    for key, entry in wanted.items():
        lora = loaded.get(key)
        if lora is None:
            session.add_lora(entry.path, entry.weight, name=entry.name)
            if not entry.enabled:
                name = next(lo.name for lo in session.loras if _key(lo.path) == key)
                session.set_enabled(name, False)
            continue
        if lora.weight != entry.weight:
            session.set_weight(lora.name, entry.weight)
        if lora.enabled != entry.enabled:
            session.set_enabled(lora.name, entry.enabled)


def _key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _normal_spec(spec: Any) -> Any:
    """None for the built-in model however it is spelled; other specs as text."""
    if spec is None:
        return None
    text = str(spec).strip()
    return None if text.lower() in ("", "tiny", "builtin", "builtin-tiny") else text
