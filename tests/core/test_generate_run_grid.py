"""Grids over a training run: its saved states in step order (files, checkpoints, the final
LoRA), a checkpoint exported as the very LoRA the trainer writes, runs that kept only the final
file or lost their config, and a grid whose every cell is that step's file rendered directly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lora_files import make_lora_file
from lora_studio.core.errors import StudioError
from lora_studio.core.generate.grid import LABEL
from lora_studio.core.generate.run_grid import SavedState, export_checkpoint, list_run, run_grid
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.core.jobs import JobControl
from run_files import PROMPTS, make_training_run

REQUEST = GenerationRequest(PROMPTS[0], steps=2, cfg=5.0, seed=11)


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory, one_torch_thread):
    return make_training_run(tiny_model_dir, tmp_path_factory.mktemp("run"))


@pytest.fixture
def run_copy(run_dir, tmp_path):
    """A copy to change (exports write into the run folder)."""
    return shutil.copytree(run_dir, tmp_path / "run")


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_a_run_lists_its_saved_states_in_step_order(run_dir):
    listing = list_run(run_dir)
    assert listing.name == "t"
    assert [(s.step, s.final, s.checkpoint_only) for s in listing.states] == [
        (1, False, True), (2, False, False), (3, False, True), (4, True, False)]
    assert listing.states[1].path == run_dir / "t-step2.safetensors"  # the file, not step-2
    assert listing.states[-1].path == run_dir / "t.safetensors"
    assert [s.label for s in listing.states] == ["step 1", "step 2", "step 3", "step 4\nfinal"]
    assert "Steps 1, 3 are only in checkpoints" in listing.summary()
    assert listing.sample["prompts"] == PROMPTS and not listing.only_final


def test_a_checkpoint_exports_as_the_lora_the_trainer_wrote_at_that_step(run_copy):
    from lora_studio.core.lora.formats import read_lora
    from lora_studio.core.lora.sft import read_header

    trainer_file = (run_copy / "t-step2.safetensors").rename(run_copy / "trainer-step2.bin")
    listing = list_run(run_copy)
    state = next(s for s in listing.states if s.step == 2)
    assert state.checkpoint_only and state.path == run_copy / "checkpoints" / "step-2"
    out = export_checkpoint(listing, state)
    assert out == run_copy / "t-step2.safetensors"
    ours, theirs = read_lora(out), read_lora(trainer_file)
    assert ours.modules.keys() == theirs.modules.keys()
    assert any(name.startswith("text_encoder.") for name in ours.modules)
    for name, module in theirs.modules.items():
        assert ours.modules[name].alpha == module.alpha == 2.0
        assert ours.modules[name].down.equal(module.down) and ours.modules[name].up.equal(
            module.up), name
    assert read_header(out).metadata["ss_steps"] == "2"
    assert not list_run(run_copy).states[1].checkpoint_only  # now an ordinary file


def test_a_run_with_only_the_final_file_says_how_to_keep_steps(run_copy):
    shutil.rmtree(run_copy / "checkpoints")
    (run_copy / "t-step2.safetensors").unlink()
    listing = list_run(run_copy)
    assert [(s.step, s.final) for s in listing.states] == [(4, True)] and listing.only_final
    assert "only its final LoRA" in listing.summary()
    assert "output.save_every" in listing.summary()


def test_missing_files_and_configs_are_named(run_copy, tmp_path):
    (run_copy / "t.toml").unlink()  # no config: checkpoints lack their alpha
    listing = list_run(run_copy)
    assert [s.step for s in listing.states] == [2, 4]
    assert "step 1 cannot be used" in listing.summary() and "t.toml" in listing.summary()
    (run_copy / "t.safetensors").unlink()  # no final file: the intermediate one remains
    assert [(s.step, s.final) for s in list_run(run_copy).states] == [(2, False)]
    lora = (run_copy / "t-step2.safetensors").rename(tmp_path / "lora.safetensors")
    with pytest.raises(StudioError, match="no LoRA files"):
        list_run(run_copy)
    with pytest.raises(StudioError, match="not a folder"):
        list_run(tmp_path / "nowhere")
    shutil.copy(lora, run_copy / "a.safetensors")
    shutil.copy(lora, run_copy / "b-step5.safetensors")
    with pytest.raises(StudioError, match="several LoRAs: a, b"):
        list_run(run_copy)
    assert [s.step for s in list_run(run_copy, name="b").states] == [5]


def test_each_cell_is_that_steps_file_rendered_directly(run_copy, tiny_model_dir, tmp_path,
                                                        one_torch_thread):
    session = GenerationSession(tiny_model_dir)
    other = make_lora_file(tiny_model_dir, tmp_path / "other.safetensors", seed=5)
    session.add_lora(other, 0.9)  # a stacked LoRA: off during the grid, back on after
    listing = list_run(run_copy)
    seen = []
    grid = run_grid(session, listing, REQUEST, 0.8, PROMPTS,
                    cell_done=lambda r, c, _image: seen.append((r, c)))
    assert grid.complete and seen[:3] == [(0, 0), (1, 0), (0, 1)]  # column after column
    assert [(lo.name, lo.weight, lo.enabled) for lo in session.loras] == [("other", 0.9, True)]
    assert (run_copy / "t-step1.safetensors").is_file()  # the checkpoints were exported
    session.set_enabled("other", False)
    for c, state in enumerate(list_run(run_copy).states):
        name = session.add_lora(state.path, 0.8).adapter_name
        for r, prompt in enumerate(PROMPTS):
            direct = session.generate(GenerationRequest(prompt, steps=2, cfg=5.0, seed=11))
            assert np.abs(pixels(grid.cells[r][c]) - pixels(direct[0].image)).max() <= 1, (r, c)
        session.remove_lora(name)
    assert np.abs(pixels(grid.cells[0][0]) - pixels(grid.cells[0][3])).mean() > 0.5
    w, h = grid.cells[0][0].size
    assert grid.image.size[1] == 2 * LABEL + 2 * h  # "step 4\nfinal": a two-line header
    assert grid.col_labels[-1] == "step 4\nfinal" and grid.row_labels == PROMPTS


def test_a_cancelled_run_grid_keeps_its_cells_and_unloads_the_steps(run_dir, tiny_model_dir,
                                                                    one_torch_thread):
    session = GenerationSession(tiny_model_dir)
    listing = list_run(run_dir)
    files = [s for s in listing.states if not s.checkpoint_only]  # nothing to export

    control, seen = JobControl(), []

    def done(r, c, _image) -> None:
        seen.append((r, c))
        if len(seen) == 3:
            control.cancel()

    grid = run_grid(session, listing, REQUEST, 1.0, PROMPTS, states=files, control=control,
                    cell_done=done)
    assert not grid.complete
    assert [[c is not None for c in row] for row in grid.cells] == [[True, True], [True, False]]
    assert session.loras == []
    assert isinstance(files[0], SavedState)


def test_the_nearest_saved_state_to_the_best_validation_step(tmp_path):
    from lora_studio.core.generate.run_grid import RunListing, SavedState

    listing = RunListing(tmp_path, "t", [SavedState(100, tmp_path / "t-step100.safetensors"),
                                         SavedState(200, tmp_path / "t-step200.safetensors"),
                                         SavedState(300, tmp_path / "t.safetensors", final=True)])
    assert listing.nearest(240).step == 200 and listing.nearest(150).step == 100  # tie: earlier
    assert listing.nearest(290).path.name == "t.safetensors"
    assert "nearest saved LoRA is step 200 (t-step200.safetensors)" in listing.best_step_note(230)
    assert RunListing(tmp_path, "t", []).best_step_note(5) == \
        " The validation loss was best at step 5."
