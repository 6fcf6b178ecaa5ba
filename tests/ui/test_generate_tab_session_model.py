"""SessionModel: the LoRA stack, applying only what changed to the session, a base-model change
dropping the session, and relaying only its own job's events (no torch: a recording session)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from lora_studio.core import events as ev
from lora_studio.core.lora.block_weights import BlockWeights
from lora_studio.core.paths import path_key
from lora_studio.ui.session_model import LoraEntry, SessionModel, apply_stack
from lora_studio.ui.workers import JobRunner


@dataclass
class FakeLora:
    name: str
    path: Path
    weight: float
    enabled: bool
    block_weights: BlockWeights | None = None
    start: float = 0.0


class RecordingSession:
    """Just enough of GenerationSession to see which calls a stack change makes."""

    def __init__(self) -> None:
        self._loras: dict[str, FakeLora] = {}
        self.calls: list[tuple] = []

    @property
    def loras(self) -> list[FakeLora]:
        return [replace(lo) for lo in self._loras.values()]

    def add_lora(self, path, weight=1.0, name=None, block_weights=None):
        self.calls.append(("add", name, weight) + ((block_weights,) if block_weights else ()))
        self._loras[name] = FakeLora(name, Path(path), weight, True, block_weights)

    def remove_lora(self, name):
        self.calls.append(("remove", name))
        del self._loras[name]

    def set_weight(self, name, weight):
        self.calls.append(("weight", name, weight))
        self._loras[name].weight = weight

    def set_enabled(self, name, enabled):
        self.calls.append(("enabled", name, enabled))
        self._loras[name].enabled = enabled

    def set_block_weights(self, name, block_weights):
        self.calls.append(("blocks", name, block_weights))
        self._loras[name].block_weights = block_weights

    def set_start(self, name, start):
        self.calls.append(("start", name, start))
        self._loras[name].start = start


@pytest.fixture
def model(qtbot):
    runner = JobRunner()
    yield SessionModel(runner, "some/model")
    runner.wait()


def test_the_stack_is_edited_by_path_and_says_when_it_changed(model, qtbot, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    with qtbot.waitSignal(model.stack_changed):
        entry = model.add_lora(a, 0.5)
    assert entry == LoraEntry(a, "a", 0.5, True)
    model.add_lora(b)
    model.set_weight(a, 0.7)
    model.set_enabled(b, False)
    assert model.stack == (LoraEntry(a, "a", 0.7, True), LoraEntry(b, "b", 1.0, False))
    model.add_lora(a, 0.9)  # the same file again: updated, not added twice
    assert [e.weight for e in model.stack] == [0.9, 1.0]
    with qtbot.assertNotEmitted(model.stack_changed):
        model.set_weight(a, 0.9)  # no change, no signal
    model.remove_lora(a)
    assert [e.name for e in model.stack] == ["b"]
    with pytest.raises(KeyError):
        model.set_weight(a, 1.0)


def test_applying_the_stack_changes_only_what_differs(tmp_path):
    session = RecordingSession()
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    apply_stack(session, [LoraEntry(a, "a", 0.5), LoraEntry(b, "b", 1.0, enabled=False)])
    assert session.calls == [("add", "a", 0.5), ("add", "b", 1.0), ("enabled", "b", False)]
    session.calls.clear()
    apply_stack(session, [LoraEntry(a, "a", 0.5), LoraEntry(b, "b", 1.0, enabled=False)])
    assert session.calls == []  # nothing changed: nothing touched
    apply_stack(session, [LoraEntry(a, "a", 0.25), LoraEntry(c, "c", 1.0)])
    assert session.calls == [("remove", "b"), ("weight", "a", 0.25), ("add", "c", 1.0)]

    outs, ins = BlockWeights.parse("OUTS"), BlockWeights.parse("INS")
    session.calls.clear()
    apply_stack(session, [LoraEntry(a, "a", 0.25, block_weights=outs), LoraEntry(c, "c", 1.0),
                          LoraEntry(b, "b", 1.0, block_weights=ins)])
    assert session.calls == [("blocks", "a", outs), ("add", "b", 1.0, ins)]
    session.calls.clear()
    apply_stack(session, [LoraEntry(a, "a", 0.25, block_weights=outs), LoraEntry(c, "c", 1.0),
                          LoraEntry(b, "b", 1.0, block_weights=ins)])
    assert session.calls == []
    apply_stack(session, [LoraEntry(a, "a", 0.25, block_weights=outs),
                          LoraEntry(c, "c", 1.0, start=0.5), LoraEntry(b, "b", 1.0,
                                                                       block_weights=ins)])
    assert session.calls == [("start", "c", 0.5)]
    session.calls.clear()
    apply_stack(session, [LoraEntry(a, "a", 0.25, block_weights=outs)])
    apply_stack(session, [LoraEntry(a, "a", 0.25, block_weights=outs),
                          LoraEntry(c, "c", 1.0, start=0.4)])  # added with its start
    assert session.calls[-2:] == [("add", "c", 1.0), ("start", "c", 0.4)]


def test_a_change_reaches_the_live_session_alone(model, tmp_path):
    """Only what changed is passed on: every call re-applies the adapters."""
    a = tmp_path / "a.safetensors"
    session = RecordingSession()
    model.add_lora(a, 0.5)
    model._session, model._session_spec = session, "some/model"
    apply_stack(session, model.stack)
    model._adapters = {path_key(a): "a"}
    session.calls.clear()
    model.set_block_weights(a, BlockWeights.parse("OUTALL"))
    model.set_weight(a, 0.7)
    model.set_block_weights(a, BlockWeights.ones())  # all ones = none
    assert session.calls == [("blocks", "a", BlockWeights.parse("OUTALL")), ("weight", "a", 0.7),
                             ("blocks", "a", None)]
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
