"""`lora-studio train CONFIG.toml`: load the config, train, show progress, handle Ctrl+C.

* Progress: a tqdm bar on stderr with loss, lr and ETA; logs and saved files above it; where the
  LoRA was saved on stdout at the end.
* `--events-json`: one JSON object per event on stdout (`events.event_to_json`), no bar, so
  another program (the app, a notebook, a cluster script) can follow the run.
* Ctrl+C: the first press asks the trainer to stop after the current step and save the LoRA
  trained so far (and a checkpoint to resume from); a second press aborts at once.
* Exit codes: 0 finished, 130 cancelled, 2 a problem the user can fix (bad config, no images,
  device), 1 an unexpected error.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from lora_studio.core import events as ev
from lora_studio.core.quiet import quiet_libraries
from lora_studio.core.errors import StudioError
from lora_studio.core.jobs import JobControl


class _ProgressPrinter:
    """The `emit` callback of the CLI: a progress bar for people, or JSON lines for programs."""

    def __init__(self, events_json: bool) -> None:
        self.events_json = events_json
        self.bar: Any = None
        self.debug = bool(os.environ.get("LORA_STUDIO_DEBUG"))

    def __call__(self, event: ev.Event) -> None:
        if self.events_json:
            print(json.dumps(event_to_json_safe(event)), flush=True)
            return
        if isinstance(event, ev.JobStarted):
            from tqdm import tqdm

            self._write(event.message)
            self.bar = tqdm(total=event.total_steps, file=sys.stderr, unit="step",
                            dynamic_ncols=True)
        elif isinstance(event, ev.StepProgress):
            if self.bar is not None:
                self.bar.n = event.step
                self.bar.set_postfix(loss=f"{event.loss:.4f}", lr=f"{event.lr:.2e}",
                                     eta=_duration(event.eta_s), refresh=False)
                self.bar.refresh()
        elif isinstance(event, ev.Log):
            self._write(("warning: " if event.level == "warning" else "") + event.message)
        elif isinstance(event, ev.Preview):
            self._write(f"Preview at step {event.step}: {event.prompt!r}")
        elif isinstance(event, ev.Overfitting):
            self._write(f"warning: {event.message} {event.advice}")
        elif isinstance(event, ev.Validation):
            self._write(f"Validation loss at step {event.step}: {event.loss:.4f} "
                        f"({event.images} images)")
        elif isinstance(event, ev.CheckpointSaved):
            self._write(f"Checkpoint saved: {event.path}")
        elif isinstance(event, ev.LoraSaved):
            self._write(f"LoRA saved: {event.path}")
        elif isinstance(event, (ev.Finished, ev.Cancelled, ev.Failed)):
            self._close()
            if isinstance(event, ev.Failed):
                print(f"error: {event.message}", file=sys.stderr)
                if self.debug and event.details:
                    print(event.details, file=sys.stderr)
            else:
                print(event.message, flush=True)

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def event_to_json_safe(event: ev.Event) -> dict[str, Any]:
    data = ev.event_to_json(event)
    if isinstance(event, ev.Finished):
        data["result"] = None if event.result is None else str(getattr(event.result,
                                                                       "lora_path", ""))
    return data


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:02d}:{seconds % 60:02d}"


def _install_sigint(control: JobControl):
    """First Ctrl+C → cancel (save and stop after this step); second → KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if control.cancelled:
            raise KeyboardInterrupt
        control.cancel()
        print("\nStopping after this step and saving the LoRA trained so far "
              "(press Ctrl+C again to abort without saving)...", file=sys.stderr, flush=True)

    return signal.signal(signal.SIGINT, handler)


def run_train_command(config_path: str | Path, overrides: list[str], resume: Path | None,
                      events_json: bool) -> int:
    """The `lora-studio train` command; returns the process exit code."""
    from lora_studio.core.train.config import load_config
    from lora_studio.core.jobs import EXIT_STUDIO_ERROR
    from lora_studio.core.train.trainer import run_training_job_with_code

    printer = _ProgressPrinter(events_json)
    try:
        cfg = load_config(config_path, overrides)
    except StudioError as exc:
        if not events_json:
            raise  # cli.main prints "error: <what>\n<fix>" and exits 2
        printer(ev.Failed(message=exc.user_message()))
        return EXIT_STUDIO_ERROR
    quiet_libraries()
    control = JobControl()
    previous = _install_sigint(control)
    try:
        _, code = run_training_job_with_code(cfg, printer, control,
                                             resume_from=Path(resume) if resume else None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return code
