"""Runs you can reopen: every training run's folder keeps what happened in it.

A run folder (the config's output folder) holds the config used (`<name>.toml`), the LoRA files,
`checkpoints/step-N/`, the previews by step (`samples/step-000250-0.png`, with A1111
parameters) and `events.jsonl`: every event of the run, one JSON object per line, appended as it
happens (a resumed run appends to it). `summarize_run` reads a folder back into what the Train
tab's History shows: how the run ended (or that it was interrupted: killed, crashed, the machine
slept), its loss and validation curves, its previews and files, the newest checkpoint to resume
from. The studio remembers the run folders it started in `runs.json` in the user data folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_studio.core import events as ev

EVENTS_FILE = "events.jsonl"
INDEX_FILE = "runs.json"
_TERMINAL = {"Finished": "finished", "Failed": "failed", "Cancelled": "cancelled"}


class EventLog:
    """Appends every event to `<folder>/events.jsonl` (an emit function)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / EVENTS_FILE

    def __call__(self, event: ev.Event) -> None:
        record = {"time": round(time.time(), 3), **ev.event_to_json(event)}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError:  # a full or read-only disk must not stop the run; the run says so
            pass


def read_events(folder: str | Path) -> list[dict[str, Any]]:
    """The events of a run folder, oldest first (a line cut short by a kill is skipped)."""
    path = Path(folder) / EVENTS_FILE
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


@dataclass
class RunSummary:
    """One run folder as the History shows it."""

    folder: Path
    status: str  # "running or interrupted", "finished", "failed", "cancelled"
    steps_done: int = 0
    total_steps: int = 0
    message: str = ""
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    loras: list[Path] = field(default_factory=list)
    previews: list[Path] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    started: float | None = None
    config: Path | None = None  # the config the run saved beside its files

    @property
    def resumable_from(self) -> Path | None:
        """The newest complete checkpoint of the run (None: none was written)."""
        return newest_checkpoint(self.folder)

    @property
    def can_resume(self) -> bool:
        return self.status != "finished" and self.resumable_from is not None


def newest_checkpoint(folder: str | Path) -> Path | None:
    """The run's complete checkpoint with the highest step (`checkpoint.latest_checkpoint`)."""
    from lora_studio.core.train.checkpoint import latest_checkpoint

    return latest_checkpoint(Path(folder))


def summarize_run(folder: str | Path) -> RunSummary:
    """What `events.jsonl` and the files of a run folder say about the run."""
    folder = Path(folder)
    summary = RunSummary(folder=folder, status="running or interrupted")
    for record in read_events(folder):
        kind = record.get("event")
        summary.started = summary.started or record.get("time")
        if kind == "JobStarted":
            summary.total_steps = int(record.get("total_steps") or 0)
        elif kind == "StepProgress":
            summary.steps_done = int(record["step"])
            summary.losses.append((summary.steps_done, float(record["loss"])))
        elif kind == "Validation":
            summary.validation.append((int(record["step"]), float(record["loss"])))
        elif kind == "Log":
            summary.log.append(str(record.get("message", "")))
        elif kind in _TERMINAL:
            summary.status = _TERMINAL[kind]
            summary.message = str(record.get("message", ""))
        if kind in ("JobStarted", "Diverged", "Overfitting"):
            summary.log.append(str(record.get("message", "")))
    configs = sorted(folder.glob("*.toml"), key=lambda p: p.stat().st_mtime)
    summary.config = configs[-1] if configs else None
    summary.loras = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    summary.previews = sorted((folder / "samples").glob("step-*.png"))
    return summary


def resume_request(folder: str | Path):
    """(the run's config, its newest checkpoint): what `lora-studio train CONFIG --resume
    CHECKPOINT` and the History's Resume both run. Raises StudioError when it cannot resume."""
    from lora_studio.core.errors import StudioError
    from lora_studio.core.train.config import load_config

    summary = summarize_run(folder)
    checkpoint = summary.resumable_from
    if summary.config is None or checkpoint is None:
        missing = "its config" if summary.config is None else "a checkpoint"
        raise StudioError(f"The run in {folder} cannot be resumed: it has no {missing}.",
                          "Set checkpoint.every (Checkpoint every) so runs write resumable "
                          "checkpoints, and start it again.")
    return load_config(summary.config), checkpoint


# ----------------------------------------------------------------------------- the index
def _index_path() -> Path:
    from lora_studio.core.paths import user_data_dir

    return user_data_dir() / INDEX_FILE


def known_runs() -> list[Path]:
    """The run folders the studio started, newest first (folders since deleted are left out)."""
    try:
        folders = json.loads(_index_path().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return [Path(f) for f in folders if isinstance(f, str) and Path(f).is_dir()]


def remember_run(folder: str | Path, limit: int = 200) -> None:
    """Put a run folder first in the index (written atomically)."""
    from lora_studio.core.fileio import atomic_path

    folder = str(Path(folder).resolve())
    folders = [str(f) for f in known_runs() if str(f) != folder]
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps([folder, *folders][:limit], indent=1), encoding="utf-8")
