"""SessionModel: the LoRA stack, applying only what changed to the session, a base-model change
dropping the session, and relaying only its own job's events (no torch: a recording session)."""

from __future__ import annotations

import pytest

from lora_studio.core import events as ev
from lora_studio.core.lora.block_weights import BlockWeights
from lora_studio.core.generate.stack import StackEntry, StackReport
from lora_studio.ui.session_model import SessionModel
from lora_studio.ui.workers import JobRunner


class RecordingSession:
    """Just enough of GenerationSession to see what a stack change passes on."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def set_stack(self, entries, *, load=True):
        self.calls.append((tuple(entries), load))
        return StackReport()


@pytest.fixture
def model(qtbot):
    runner = JobRunner()
    yield SessionModel(runner, "some/model")
    runner.wait()


def test_the_stack_is_edited_by_path_and_says_when_it_changed(model, qtbot, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    with qtbot.waitSignal(model.stack_changed):
        entry = model.add_lora(a, 0.5)
    assert entry == StackEntry(a, 0.5, True, name="a")
    model.add_lora(b)
    model.set_weight(a, 0.7)
    model.set_enabled(b, False)
    assert model.stack == (StackEntry(a, 0.7, True), StackEntry(b, 1.0, False))
    model.add_lora(a, 0.9)  # the same file again: updated, not added twice
    assert [e.weight for e in model.stack] == [0.9, 1.0]
    with qtbot.assertNotEmitted(model.stack_changed):
        model.set_weight(a, 0.9)  # no change, no signal
    model.remove_lora(a)
    assert [e.name for e in model.stack] == ["b"]
    with pytest.raises(KeyError):
        model.set_weight(a, 1.0)


def test_a_change_reaches_the_live_session_as_the_whole_stack_one_way(model, tmp_path):
    """Each change hands the session the whole stack once, without loading (the GUI thread
    never waits for a render nor reads a file); a change to nothing passes nothing on."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    session = RecordingSession()
    model.add_lora(a, 0.5)
    model.add_lora(b)
    model._session, model._session_spec = session, "some/model"
    model.set_block_weights(a, BlockWeights.parse("OUTALL"))
    model.set_weight(a, 0.7)
    model.set_weight(a, 0.7)  # no change
    model.set_block_weights(a, BlockWeights.ones())  # all ones = none
    model.set_enabled(b, False)
    assert [load for _, load in session.calls] == [False] * 4
    assert [(e.weight, e.block_weights) for e in session.calls[1][0]] == [
        (0.7, BlockWeights.parse("OUTALL")), (1.0, None)]
    assert session.calls[-1][0] == model.stack
    assert model.entry(a).block_weights is None


def test_a_base_model_change_drops_the_session(model, qtbot, tmp_path):
    model._session, model._session_spec = RecordingSession(), "some/model"
    with qtbot.assertNotEmitted(model.base_model_changed):
        model.set_base_model("some/model")
    assert model.session is not None
    with qtbot.waitSignal(model.base_model_changed) as changed:
        model.set_base_model(None)
    assert changed.args == [None] and model.session is None and model.base_model is None
    model.set_base_model("tiny")  # the built-in model, however it is spelled: no change
    assert model.base_model is None


def test_only_our_jobs_events_are_relayed(model, qtbot):
    relayed: list = []
    model.generation_event.connect(relayed.append)
    with qtbot.waitSignal(model.runner.finished, timeout=10_000):
        model.runner.start(lambda emit, control: emit(ev.Log("training says hi")), "training")
    assert relayed == [] and not model.is_generating

    def fake_generation(emit, control):
        emit(ev.Log("rendering"))
        return ["image"]

    model.generation_job = lambda request: fake_generation
    with qtbot.waitSignal(model.generation_finished, timeout=10_000) as done:
        assert model.generate(object())
        assert model.is_generating
    assert [type(e) for e in relayed] == [ev.Log, ev.Finished]
    assert isinstance(done.args[0], ev.Finished) and not model.is_generating
