"""The Train tab's view-model: one training run of the tab, what state it is in, and its commands.

`TrainRun` owns the run so that no widget has to: whether a run of this tab is going, its
`state` (idle → starting → running ⇄ paused → cancelling → finished / failed / cancelled), the
step and total, the loss history, the validation losses (`validations`, `best_validation()`),
the overfitting alert (`overfitting`: its `best_step`), the previews received (each checked by
`core.train.preview_check`), the last checkpoint and LoRA files saved, the requests still waiting
(sample now / save now) and the terminal event. It reads the job only through the events the
window's `JobRunner` carries (events of other jobs, e.g. a generation, are ignored) and steers it
only through the runner's `JobControl`:

    run.start(config, job) -> bool   run.pause()   run.resume()   run.toggle_pause()
    run.sample_now()   run.save_now()   run.cancel()

Pause is in memory: the trainer waits in `control.wait_if_paused()` before its next step and
continues exactly there on Resume (Cancel also wakes it). The run's control has
`pause_on_divergence`: a non-finite loss or gradient pauses the run by itself (a `Diverged`
event; the last good LoRA is saved) until the person resumes — `resume(lr_scale=0.5)` goes on at
half the learning rate — or cancels. Sample now / Save now are taken by the
trainer right after the current step — while paused, right after the first step after Resume.
The trainer's it/s and ETA are measured inside its steps, so a pause never counts; this model
keeps no clock of its own.

Signals (GUI thread): `reset(object)` a run began (its TrainConfig: the view clears);
`changed()` the state, the pending requests or the status text changed; `event(object)` an event
of this run, after the model took it in; `preview_added(object, object)` a `RunPreview` and its
image; `ended(object)` the terminal event (Finished / Failed / Cancelled), after `event`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.train.preview_check import preview_problem
from lora_studio.ui.workers import Job, JobRunner

JOB_NAME = "training"
STARTING_TEXT = "Starting: loading the base model and caching the dataset…"
CANCELLING_TEXT = ("Cancelling: stopping after the current step and saving the LoRA trained "
                   "so far…")
CANCELLING_SET_UP_TEXT = "Cancelling the set-up (nothing is trained yet, nothing to save)…"


class RunState(str, Enum):
    IDLE = "idle"
    STARTING = "starting"  # started; the model loads and the dataset is cached
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


GOING = (RunState.STARTING, RunState.RUNNING, RunState.PAUSED)  # the commands act in these
ENDINGS = {ev.Finished: RunState.FINISHED, ev.Failed: RunState.FAILED,
           ev.Cancelled: RunState.CANCELLED}


@dataclass(frozen=True)
class RunPreview:
    """A preview received: where it came from and what `preview_problem` found (None: fine).
    The pixels go to the view with `preview_added`; the model does not keep them."""

    step: int
    prompt: str
    index: int
    size: tuple[int, int]
    problem: str | None = None


class TrainRun(QObject):
    """The Train tab's run (see the module docstring)."""

    reset = Signal(object)
    changed = Signal()
    event = Signal(object)
    preview_added = Signal(object, object)
    ended = Signal(object)

    def __init__(self, runner: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._ours = False  # the runner's job is this run's
        self._clear()
        self.trained_lora: Path | None = None  # the LoRA the last finished run saved
        self.config: Any = None  # the TrainConfig of the last run started
        runner.event.connect(self._on_event)
        runner.finished.connect(self._on_finished)

    def _clear(self) -> None:
        self.state = RunState.IDLE
        self._loop_started = False  # JobStarted arrived: the steps have begun
        self.step = 0
        self.total_steps = 0
        self.progress: ev.StepProgress | None = None  # the last step's numbers
        self.losses: list[tuple[int, float]] = []
        self.validations: list[tuple[int, float]] = []  # (step, validation loss)
        self.overfitting: ev.Overfitting | None = None  # the alert (once per run), kept
        self.previews: list[RunPreview] = []
        self.last_checkpoint: Path | None = None
        self.last_lora: Path | None = None  # the last LoRA file the run wrote
        self.final_lora: Path | None = None  # LoraSaved(final=True)
        self.terminal: ev.Event | None = None
        self.diverged: ev.Diverged | None = None  # why the run paused itself (until resumed)
        self.sample_pending = False
        self.save_pending = False

    # ------------------------------------------------------------------ what the view reads
    @property
    def runner(self) -> JobRunner:
        return self._runner

    @property
    def is_active(self) -> bool:
        """A run of this tab is going (until its worker thread has ended)."""
        return self._ours and self._runner.is_running

    @property
    def can_start(self) -> bool:
        return not self._runner.is_running

    @property
    def can_control(self) -> bool:
        """Pause / Resume, Sample now, Save now and Cancel act now."""
        return self._ours and self.state in GOING and self._runner.control is not None

    @property
    def paused(self) -> bool:
        return self.state is RunState.PAUSED

    @property
    def has_prompts(self) -> bool:
        """The run has preview prompts (Sample now renders them)."""
        return bool(self.config is not None and self.config.sample.prompts)

    def best_validation(self) -> tuple[int, float] | None:
        """The (step, loss) with the lowest validation loss so far."""
        return min(self.validations, key=lambda p: p[1]) if self.validations else None

    @property
    def run_folder(self) -> Path | None:
        """The output folder of the last run started (where its LoRAs per step are saved)."""
        return Path(self.config.output_dir) if self.config is not None else None

    def flagged_previews(self) -> list[RunPreview]:
        return [p for p in self.previews if p.problem]

    def saved_lora(self) -> Path | None:
        """The LoRA file the run ended with: its final save, else the last file it wrote."""
        final = self.final_lora if isinstance(self.terminal, ev.Finished) else None
        outputs = getattr(self.terminal, "outputs", None) or []
        return final or self.last_lora or _lora_in(outputs)

    def status_text(self) -> str:
        """One line on where the run stands (the view's status)."""
        state = self.state
        if state is RunState.STARTING:
            return STARTING_TEXT + self._pending_text(" (queued: {} after the first step)")
        if state is RunState.RUNNING:
            return "Training…" + self._pending_text(" ({} after this step)")
        if state is RunState.PAUSED and self.diverged is not None:
            return (f"Paused at step {self.diverged.step}: training diverged (the last good "
                    "LoRA is saved). Resume goes on from there; Cancel stops.")
        if state is RunState.PAUSED:
            where = (f"Paused at step {self.step} — Resume continues exactly where it stopped."
                     if self.step else "Paused before the first step (the model still loads) "
                     "— Resume starts training.")
            return where + self._pending_text(" Queued: {} right after Resume.")
        if state is RunState.CANCELLING:
            return CANCELLING_TEXT if self._loop_started else CANCELLING_SET_UP_TEXT
        return {RunState.IDLE: "Not started.", RunState.FINISHED: "Finished.",
                RunState.CANCELLED: "Cancelled.",
                RunState.FAILED: "Training failed (see the message)."}[state]

    def what_stopping_keeps(self) -> str:
        """What stopping the run now keeps (the window's quit question)."""
        if not self._loop_started:
            return ("It is still setting up (loading the model, caching the dataset): nothing "
                    "is trained yet, so nothing is saved.")
        where = f" to {self.config.lora_path}" if self.config is not None else ""
        return (f"It is at step {self.step} of {self.total_steps}. Stopping saves the LoRA "
                f"trained so far{where}, with a checkpoint that History > Resume continues "
                "from; the step under way is lost.")

    def _pending_text(self, template: str) -> str:
        what = [w for w, on in (("a preview", self.sample_pending),
                                ("a save", self.save_pending)) if on]
        return template.format(" and ".join(what)) if what else ""

    # ------------------------------------------------------------------ commands
    def start(self, config: Any, job: Job) -> bool:
        """Run `job` (the training of `config`) on the runner. False when another job runs
        (the runner's `refused` says which)."""
        if self._runner.is_running:
            return self._runner.start(job, JOB_NAME)
        self._clear()
        self.config = config
        self.total_steps = config.train.steps
        self.state = RunState.STARTING
        self.reset.emit(config)
        control = JobControl(pause_on_divergence=True)
        self._ours = self._runner.start(job, JOB_NAME, control, keeps=self.what_stopping_keeps)
        if not self._ours:
            self.state = RunState.IDLE
        self.changed.emit()
        return self._ours

    def pause(self) -> None:
        """Hold the run before its next step (in memory; nothing is saved or unloaded)."""
        if self.can_control and not self.paused:
            self._runner.control.pause()
            self._set_state(RunState.PAUSED)

    def resume(self, lr_scale: float | None = None) -> None:
        """Continue a paused run exactly where it stopped (after a divergence, with the
        learning rates scaled by `lr_scale` when given)."""
        if self.can_control and self.paused:
            if lr_scale and self.diverged is not None:
                self._runner.control.request_lr_scale(lr_scale)
            self.diverged = None
            self._runner.control.resume()
            self._set_state(RunState.RUNNING if self._loop_started else RunState.STARTING)

    def toggle_pause(self) -> None:
        self.resume() if self.paused else self.pause()

    def sample_now(self) -> None:
        """Render the previews after the current step (after Resume when paused)."""
        if self.can_control and self.has_prompts:
            self._runner.control.request_sample()
            self.sample_pending = True
            self.changed.emit()

    def save_now(self) -> None:
        """Save the LoRA as trained so far after the current step (after Resume when paused)."""
        if self.can_control:
            self._runner.control.request_save()
            self.save_pending = True
            self.changed.emit()

    def cancel(self) -> None:
        """Stop after the current step (a paused run wakes up to stop); the LoRA trained so far
        is saved."""
        if self.can_control:
            self._runner.control.cancel()
            self._set_state(RunState.CANCELLING)

    # ------------------------------------------------------------------ events
    def _on_event(self, event: ev.Event) -> None:
        if not self._ours:
            return
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        self.event.emit(event)
        if type(event) in ENDINGS:
            self.ended.emit(event)

    def _on_started(self, event: ev.JobStarted) -> None:
        self._loop_started = True
        self.total_steps = event.total_steps
        if self.state is RunState.STARTING:
            self._set_state(RunState.RUNNING)

    def _on_step(self, event: ev.StepProgress) -> None:
        self._loop_started = True
        self.step, self.total_steps, self.progress = event.step, event.total_steps, event
        self.losses.append((event.step, event.loss))
        if self.state is RunState.STARTING:
            self._set_state(RunState.RUNNING)
        elif self.state is RunState.PAUSED:
            self.changed.emit()  # the step that was under way when Pause was pressed

    def _on_preview(self, event: ev.Preview) -> None:
        image = event.image
        is_pil = hasattr(image, "convert") and isinstance(getattr(image, "size", None), tuple)
        problem = event.problem if event.problem is not None else \
            preview_problem(image) if is_pil else None  # checked by the job, or here
        record = RunPreview(event.step, event.prompt, event.index,
                            image.size if is_pil else (0, 0), problem or None)
        self.previews.append(record)
        if self.sample_pending:
            self.sample_pending = False
            self.changed.emit()
        self.preview_added.emit(record, event.image)

    def _on_lora_saved(self, event: ev.LoraSaved) -> None:
        self.last_lora = Path(event.path)
        if event.final:
            self.final_lora = Path(event.path)
        if self.save_pending:
            self.save_pending = False
            self.changed.emit()

    def _on_validation(self, event: ev.Validation) -> None:
        self.validations.append((event.step, event.loss))

    def _on_overfitting(self, event: ev.Overfitting) -> None:
        self.overfitting = event
        self.changed.emit()

    def _on_checkpoint(self, event: ev.CheckpointSaved) -> None:
        self.last_checkpoint = Path(event.path)

    def _on_diverged(self, event: ev.Diverged) -> None:
        """The job paused itself (its control's pause_on_divergence)."""
        self.diverged = event
        if self.state is RunState.CANCELLING:  # the job paused after the cancel: wake it
            self._runner.control.cancel()
        elif self.state in GOING:
            self._set_state(RunState.PAUSED)

    def _on_end(self, event: ev.Event) -> None:
        self.terminal = event
        self.sample_pending = self.save_pending = False
        if isinstance(event, ev.Finished):
            self.trained_lora = self.saved_lora()
        self._set_state(ENDINGS[type(event)])

    def _on_finished(self, terminal: ev.Event) -> None:
        if self._ours:
            self._ours = False
            self.changed.emit()

    def _set_state(self, state: RunState) -> None:
        self.state = state
        self.changed.emit()


_HANDLERS = {ev.JobStarted: TrainRun._on_started, ev.StepProgress: TrainRun._on_step,
             ev.Preview: TrainRun._on_preview, ev.LoraSaved: TrainRun._on_lora_saved,
             ev.CheckpointSaved: TrainRun._on_checkpoint, ev.Diverged: TrainRun._on_diverged,
             ev.Validation: TrainRun._on_validation, ev.Overfitting: TrainRun._on_overfitting,
             ev.Finished: TrainRun._on_end,
             ev.Failed: TrainRun._on_end, ev.Cancelled: TrainRun._on_end}


def _lora_in(paths: list[Path]) -> Path | None:
    loras = [Path(p) for p in paths if str(p).endswith(".safetensors")]
    return loras[-1] if loras else None
