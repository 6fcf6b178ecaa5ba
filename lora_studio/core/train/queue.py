"""The run queue: training runs waiting their turn, run one after another, kept on disk.

Each entry holds its whole config (as the TOML `lora-studio train` reads), a label, and once
it has run, how it ended. The queue lives in `queue.json` in the user data folder, written
atomically on every change, so it survives closing the app (or a crash): a run that was
running when the app went away is put back to waiting, to run again (or resume) next time.
`variations` makes several entries from one config (the same dataset at ranks 8, 16 and 32).
"""

from __future__ import annotations

import copy
import json
import tomllib
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lora_studio.core import events as ev
from lora_studio.core.train.config import TrainConfig, config_from_dict, config_to_toml

QUEUE_FILE = "queue.json"
WAITING, RUNNING, FINISHED, FAILED, CANCELLED = "waiting", "running", "finished", "failed", \
    "cancelled"


@dataclass
class QueuedRun:
    label: str
    config_toml: str
    status: str = WAITING
    outcome: str = ""  # the terminal event's message
    lora_path: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def config(self) -> TrainConfig:
        return config_from_dict(tomllib.loads(self.config_toml), validate=False)


def _default_path() -> Path:
    from lora_studio.core.paths import user_data_dir

    return user_data_dir() / QUEUE_FILE


class RunQueue:
    """The queue, backed by a JSON file (the user data folder's `queue.json` by default)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else _default_path()
        self.runs: list[QueuedRun] = self._read()

    def _read(self) -> list[QueuedRun]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return []
        runs = []
        for entry in data if isinstance(data, list) else []:
            try:
                run = QueuedRun(**entry)
            except TypeError:
                continue
            if run.status == RUNNING:  # the app went away while it ran: it runs again
                run.status = WAITING
            runs.append(run)
        return runs

    def save(self) -> None:
        from lora_studio.core.fileio import atomic_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text(json.dumps([asdict(r) for r in self.runs], indent=1),
                                 encoding="utf-8")

    def add(self, config: TrainConfig, label: str = "") -> QueuedRun:
        run = QueuedRun(label=label or config.output.name, config_toml=config_to_toml(config))
        self.runs.append(run)
        self.save()
        return run

    def remove(self, run_id: str) -> None:
        self.runs = [r for r in self.runs if r.id != run_id or r.status == RUNNING]
        self.save()

    def next_waiting(self) -> QueuedRun | None:
        return next((r for r in self.runs if r.status == WAITING), None)

    def started(self, run: QueuedRun) -> None:
        run.status = RUNNING
        self.save()

    def ended(self, run: QueuedRun, terminal: ev.Event) -> None:
        """Record how a run ended (its terminal event)."""
        run.status = {ev.Finished: FINISHED, ev.Failed: FAILED,
                      ev.Cancelled: CANCELLED}.get(type(terminal), FAILED)
        run.outcome = getattr(terminal, "message", "")
        result = getattr(terminal, "result", None)
        if getattr(result, "lora_path", None):
            run.lora_path = str(result.lora_path)
        self.save()


def variations(config: TrainConfig, key: str, values: list[Any]) -> list[tuple[str, TrainConfig]]:
    """One (label, config) per value of the dotted setting `key` ("lora.rank"), each writing to
    its own name (`<name>-r16`), e.g. a dataset at ranks 8, 16 and 32."""
    from lora_studio.core.train.presets import set_value

    short = {"lora.rank": "r", "lora.alpha": "a", "train.learning_rate": "lr",
             "train.steps": "s"}.get(key, key.rpartition(".")[2] + "-")
    out = []
    for value in values:
        variant = copy.deepcopy(config)
        set_value(variant, key, value)
        variant.output.name = f"{config.output.name}-{short}{value:g}" \
            if isinstance(value, (int, float)) else f"{config.output.name}-{short}{value}"
        out.append((f"{config.output.name}: {key} = {value}", variant))
    return out
