"""The run queue: runs one after another, each outcome listed, kept across restarts."""

from __future__ import annotations

import pytest
from pathlib import Path

from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.train.config import config_from_dict
from lora_studio.core.train.queue import (
    CANCELLED,
    FINISHED,
    WAITING,
    RunQueue,
    variations,
)
from lora_studio.core.train.trainer import run_training_job
from test_train_loop import dataset, make_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is steadier


def settings(tmp_path) -> object:
    return config_from_dict({"dataset": {"path": str(tmp_path / "d")},
                             "output": {"path": str(tmp_path / "o"), "name": "cat"}},
                            validate=False)


def test_variations_write_one_lora_each_and_the_queue_survives_a_restart(tmp_path):
    queue = RunQueue(tmp_path / "queue.json")
    for label, config in variations(settings(tmp_path), "lora.rank", [8, 16, 32]):
        queue.add(config, label)
    first = queue.next_waiting()
    queue.started(first)  # ... and the app is closed while it runs

    again = RunQueue(tmp_path / "queue.json")
    assert [r.label for r in again.runs] == [f"cat: lora.rank = {r}" for r in (8, 16, 32)]
    assert [r.status for r in again.runs] == [WAITING] * 3  # the interrupted one runs again
    assert [r.config().lora.rank for r in again.runs] == [8, 16, 32]
    assert [r.config().output.name for r in again.runs] == ["cat-r8", "cat-r16", "cat-r32"]
    again.remove(again.runs[1].id)
    assert [r.config().lora.rank for r in RunQueue(tmp_path / "queue.json").runs] == [8, 32]


def test_queued_runs_run_in_turn_and_each_outcome_is_listed(tiny_model_dir, dataset, tmp_path):
    queue = RunQueue(tmp_path / "queue.json")
    base = make_config(tiny_model_dir, dataset, tmp_path / "o", train={"steps": 2})
    for label, config in variations(base, "lora.rank", [2, 4]):
        queue.add(config, label)
    outcomes = []
    while (run := queue.next_waiting()) is not None:
        queue.started(run)
        control = JobControl()
        if run is queue.runs[1]:
            control.cancel()
        terminal = run_training_job(run.config().validate(), lambda e: None, control)
        queue.ended(run, terminal)
        outcomes.append(terminal)
    listed = RunQueue(tmp_path / "queue.json").runs
    assert [r.status for r in listed] == [FINISHED, CANCELLED]
    assert Path(listed[0].lora_path).name == "t-r2.safetensors"
    assert Path(listed[0].lora_path).is_file() and "Training finished" in listed[0].outcome
    assert isinstance(outcomes[1], ev.Cancelled) and "cancelled" in listed[1].outcome
