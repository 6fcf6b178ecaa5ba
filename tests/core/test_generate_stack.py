"""The LoRA stack's one record (`StackEntry`) and its one reconciliation
(`GenerationSession.set_stack`) on the tiny model: loads, removals, order, a bad file left out
with its reason, and every change applied in one adapter pass (a weight change re-scales only
its LoRA, once)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from lora_files import make_lora_file

from lora_studio.core.errors import ConfigError
from lora_studio.core.generate import adapters as adapters_module
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.core.generate.stack import StackEntry, unique_entries
from lora_studio.core.lora.block_weights import BlockWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ the record
def test_an_entry_is_named_by_its_file_and_checks_its_start(tmp_path):
    entry = StackEntry(str(tmp_path / "ink.v2.safetensors"), 1, block_weights=BlockWeights.ones())
    assert entry.path == tmp_path / "ink.v2.safetensors" and entry.name == "ink.v2"
    assert entry.weight == 1.0 and entry.block_weights is None  # all ones = none
    assert StackEntry(entry.path, name="Ink").name == "Ink"
    with pytest.raises(ConfigError, match="share of the steps"):
        StackEntry(entry.path, start=1.0)


def test_a_file_listed_twice_keeps_its_first_entry(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    kept = unique_entries([StackEntry(a, 0.5), StackEntry(b), StackEntry(tmp_path / "." / a.name,
                                                                          0.9)])
    assert [(e.path.stem, e.weight) for e in kept] == [("a", 0.5), ("b", 1.0)]


# ------------------------------------------------------------------ the session
@pytest.fixture(scope="module")
def session(tiny_model_dir):
    return GenerationSession(tiny_model_dir)


@pytest.fixture(scope="module")
def files(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack_loras")
    bad = folder / "damaged.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    return (make_lora_file(tiny_model_dir, folder / "a.safetensors", seed=1),
            make_lora_file(tiny_model_dir, folder / "b.safetensors", seed=2), bad)


@pytest.fixture
def empty(session):
    session.set_stack([])
    yield session
    session.set_stack([])


def render(session) -> np.ndarray:
    image = session.generate(GenerationRequest("a red circle", steps=3, seed=5))[0].image
    return np.asarray(image, dtype=np.int16)


class PassCounter:
    """Counts adapter passes: `AdapterScales.apply` calls, full passes, per-adapter re-scales."""

    def __init__(self, monkeypatch) -> None:
        self.applies, self.full, self.rescaled = 0, 0, []
        scales = adapters_module.AdapterScales
        apply, rescale, full = scales.apply, scales._rescale, adapters_module.set_adapter_weights

        def counted_apply(this, active):
            self.applies += 1
            return apply(this, active)

        def counted_rescale(this, adapter, *rest):
            self.rescaled.append(adapter)
            return rescale(this, adapter, *rest)

        def counted_full(pipe, active):
            self.full += 1
            return full(pipe, active)

        monkeypatch.setattr(scales, "apply", counted_apply)
        monkeypatch.setattr(scales, "_rescale", counted_rescale)
        monkeypatch.setattr(adapters_module, "set_adapter_weights", counted_full)


def test_set_stack_loads_removes_and_orders_and_leaves_out_a_bad_file(empty, files):
    a, b, bad = files
    report = empty.set_stack([StackEntry(a, 0.5), StackEntry(bad), StackEntry(b, enabled=False)])
    assert list(report.adapters.values()) == ["a", "b"] and set(report.loaded) == {
        StackEntry(a).key, StackEntry(b).key}
    assert report.loaded[StackEntry(a).key].matched > 0
    assert list(report.problems) == [StackEntry(bad).key]
    problem = report.problems[StackEntry(bad).key]
    assert problem.startswith("damaged.safetensors was left out: is not a safetensors file")
    assert [(e.path, e.weight, e.enabled) for e in empty.stack] == [(a, 0.5, True),
                                                                    (b, 1.0, False)]
    again = empty.set_stack([StackEntry(b, 0.3, start=0.5), StackEntry(a, 0.5)])
    assert again.loaded == {} and again.errors == {}  # nothing reloaded
    assert [(lo.name, lo.weight, lo.enabled, lo.start) for lo in empty.loras] == [
        ("b", 0.3, True, 0.5), ("a", 0.5, True, 0.0)]
    empty.set_stack([StackEntry(b, 0.3)])
    assert [lo.name for lo in empty.loras] == ["b"]


def test_one_weight_change_is_one_pass_that_rescales_only_that_lora(empty, files,
                                                                    monkeypatch):
    a, b, _ = files
    empty.set_stack([StackEntry(a, 0.5), StackEntry(b, 0.8)])
    counter = PassCounter(monkeypatch)
    empty.set_stack([StackEntry(a, 0.7), StackEntry(b, 0.8)])
    assert (counter.applies, counter.full, counter.rescaled) == (1, 0, ["a"])
    empty.set_stack([StackEntry(a, 0.7), StackEntry(b, 0.8)], load=False)  # nothing changed
    assert (counter.applies, counter.full, counter.rescaled) == (2, 0, ["a"])


def test_a_changed_stack_renders_what_a_fresh_load_renders(empty, files):
    a, b, _ = files
    outs = BlockWeights.parse("OUTALL")
    wanted = [StackEntry(b, 0.6, block_weights=outs), StackEntry(a, -0.5)]
    empty.set_stack([StackEntry(a, 1.0), StackEntry(b, 1.0, enabled=False)])
    empty.set_stack(wanted)  # weights, on/off, block weights and order changed in place
    changed = render(empty)
    empty.set_stack([])
    empty.set_stack(wanted)  # loaded afresh at those values
    assert np.array_equal(changed, render(empty))
    empty.set_stack([StackEntry(a, 1.0)])
    assert np.abs(render(empty) - changed).max() > 0  # the values do change the image


def test_without_loading_it_never_reads_a_file_nor_waits_for_a_render(empty, files):
    a, b, _ = files
    empty.set_stack([StackEntry(a, 0.5)])
    held, release, done = threading.Event(), threading.Event(), []

    def render_in_progress():  # holds the pipeline as a render does
        with empty._lock:
            held.set()
            release.wait(30)

    worker = threading.Thread(target=render_in_progress)
    worker.start()
    held.wait(30)
    caller = threading.Thread(target=lambda: done.append(
        empty.set_stack([StackEntry(a, 0.25), StackEntry(b)], load=False)))
    caller.start()
    caller.join(30)
    release.set()
    worker.join(30)
    assert done, "set_stack(load=False) waited for the pipeline"
    report = done[0]
    assert report.pending == [StackEntry(b).key] and report.loaded == {}
    assert [(Path(e.path), e.weight) for e in empty.stack] == [(a, 0.25)]
