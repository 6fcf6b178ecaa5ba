"""Runs you can reopen: events.jsonl in the run folder, a summary of any run (finished,
cancelled, or killed mid-write), and resuming it as `lora-studio train --resume` does."""

from __future__ import annotations

import pytest
import json

from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.train.runs import (
    EVENTS_FILE,
    known_runs,
    read_events,
    resume_request,
    summarize_run,
)
from test_train_loop import dataset, make_config, run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is steadier


def test_a_cancelled_run_reopens_with_its_curves_and_resumes_to_the_end(tiny_model_dir, dataset,
                                                                       tmp_path):
    folder = tmp_path / "run"
    cfg = make_config(tiny_model_dir, dataset, folder,
                      train={"steps": 5}, checkpoint={"every": 2},
                      dataset={"validation_path": str(dataset)},
                      sample={"every": 2, "prompts": ["zqstar"], "steps": 2})
    control = JobControl()
    rec = run(cfg, control, on_event=lambda e: isinstance(e, ev.StepProgress) and e.step == 3
              and control.cancel())
    assert isinstance(rec.terminal, ev.Cancelled)
    records = read_events(folder)
    assert [r["event"] for r in records][-1] == "Cancelled"
    assert len(records) == len(rec.events)  # every event, in order
    summary = summarize_run(folder)
    assert summary.status == "cancelled" and summary.steps_done == 3
    assert [s for s, _ in summary.losses] == [1, 2, 3]
    assert [s for s, _ in summary.validation] == [0]
    assert [p.name for p in summary.previews] == ["step-000002-0.png"]
    assert summary.resumable_from == folder / "checkpoints" / "step-3" and summary.can_resume
    assert known_runs()[0] == folder.resolve()

    config, checkpoint = resume_request(folder)
    rec = run(config, resume=checkpoint)
    assert isinstance(rec.terminal, ev.Finished)
    summary = summarize_run(folder)
    assert summary.status == "finished" and summary.steps_done == 5 and not summary.can_resume
    assert [s for s, _ in summary.losses] == [1, 2, 3, 4, 5]  # both sessions, one history
    assert cfg.lora_path in summary.loras


def test_a_killed_run_reads_as_interrupted_and_its_cut_line_is_skipped(tmp_path):
    folder = tmp_path / "killed"
    folder.mkdir()
    lines = [{"event": "JobStarted", "total_steps": 10, "message": "Training"},
             {"event": "StepProgress", "step": 1, "loss": 0.5, "total_steps": 10}]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"event": "StepProg'
    (folder / EVENTS_FILE).write_text(text)
    summary = summarize_run(folder)
    assert summary.status == "running or interrupted" and summary.steps_done == 1
    assert summary.total_steps == 10 and not summary.can_resume  # no checkpoint was written
