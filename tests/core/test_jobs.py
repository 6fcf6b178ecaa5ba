"""`run_job`: every job ends in exactly one terminal event, the last one it emits, and the CLI
exit code says how (the CLI, the trainer and the window's worker all run jobs through it)."""

from __future__ import annotations

import pytest

from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError
from lora_studio.core.jobs import TERMINAL_EVENTS, JobControl, run_job


def ended(job, **kwargs):
    events: list = []
    outcome = run_job(job, events.append, kwargs.pop("control", None), **kwargs)
    terminals = [e for e in events if isinstance(e, TERMINAL_EVENTS)]
    assert terminals == [outcome.terminal] and events[-1] is outcome.terminal
    return outcome, events


def test_a_returning_job_finishes_with_its_result():
    outcome, events = ended(lambda emit, control: emit(ev.Log("working")) or 42)
    assert isinstance(outcome.terminal, ev.Finished) and outcome.terminal.result == 42
    assert outcome.code == 0 and len(events) == 2


def test_events_after_the_terminal_one_are_dropped():
    def job(emit, control):
        emit(ev.Cancelled(message="stopped"))
        emit(ev.Finished())
        emit(ev.Log("late"))

    outcome, events = ended(job)
    assert outcome.terminal.message == "stopped" and outcome.code == 130 and len(events) == 1


@pytest.mark.parametrize("error, code, text", [
    (ConfigError("train.steps", "must be >= 1, got 0"), 2, "train.steps"),
    (ZeroDivisionError("boom"), 1, "Copying stopped by an unexpected error: ZeroDivisionError"),
])
def test_failures_end_as_failed_with_a_message_and_the_traceback(error, code, text):
    def job(emit, control):
        raise error

    outcome, _ = ended(job, doing="Copying")
    assert isinstance(outcome.terminal, ev.Failed) and outcome.code == code
    assert text in outcome.terminal.message and "Traceback" in outcome.terminal.details


def test_a_second_ctrl_c_cancels_with_the_jobs_words_and_a_cancelled_job_says_so():
    def interrupted(emit, control):
        raise KeyboardInterrupt

    outcome, _ = ended(interrupted, interrupted="Aborted; nothing saved.")
    assert outcome.terminal == ev.Cancelled(message="Aborted; nothing saved.")
    assert outcome.code == 130
    control = JobControl()
    control.cancel()
    outcome, _ = ended(lambda emit, control: None, control=control)
    assert isinstance(outcome.terminal, ev.Cancelled) and outcome.code == 130
    outcome, _ = ended(lambda emit, control: "r",
                       ending=lambda result, control: ev.Failed(message=f"bad {result}"))
    assert outcome.terminal == ev.Failed(message="bad r") and outcome.code == 2
