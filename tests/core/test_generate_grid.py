"""Strength grids: every cell is the same seed at its weights, labelled on one canvas; the
session's own weights come back; a cancelled grid keeps what it finished; the CLI writes it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lora_files import make_lora_file
from lora_studio.core.generate.grid import LABEL, GridAxis, strength_grid
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.core.jobs import JobControl

REQUEST = GenerationRequest("a red circle", steps=3, cfg=5.0, seed=11)


@pytest.fixture(scope="module")
def loras(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid_loras")
    return [make_lora_file(tiny_model_dir, folder / f"{n}.safetensors", seed=s)
            for n, s in (("style", 21), ("ink", 22))]


@pytest.fixture(scope="module")
def session(tiny_model_dir, loras, one_torch_thread):
    session = GenerationSession(tiny_model_dir)
    base = session.generate(REQUEST)[0].image
    for path in loras:
        session.add_lora(path, 0.7)
    return session, base


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_every_cell_is_the_seed_at_its_weights(session):
    session, base = session
    grid = strength_grid(session, REQUEST, GridAxis("style", [0.0, 1.0]),
                         GridAxis("ink", [0.0, 0.5, 1.0]))
    assert grid.complete and grid.image.size == (LABEL * 3 + 3 * 64, LABEL + 2 * 64)
    assert np.array_equal(pixels(grid.cells[0][0]), pixels(base))  # both at 0: the base model
    session.set_weight("style", 1.0)
    session.set_weight("ink", 0.5)
    direct = session.generate(REQUEST)[0].image
    assert np.array_equal(pixels(grid.cells[1][1]), pixels(direct))
    assert np.abs(pixels(grid.cells[1][2]) - pixels(grid.cells[1][0])).mean() > 0.5
    corner = np.asarray(grid.image)[LABEL:LABEL + 64, LABEL * 3:LABEL * 3 + 64]
    assert np.array_equal(corner.astype(np.int16), pixels(base))  # placed where it belongs


def test_the_session_weights_come_back_and_a_cancel_keeps_the_cells_done(session):
    session, _ = session
    session.set_weight("style", 0.3)
    session.set_weight("ink", 0.9)

    control, seen = JobControl(), []

    def done(r, c, _image) -> None:
        seen.append((r, c))
        if len(seen) == 2:
            control.cancel()

    grid = strength_grid(session, REQUEST, GridAxis("style", [0.0, 0.5, 1.0]), control=control,
                         cell_done=done)
    assert not grid.complete
    assert [cell is not None for row in grid.cells for cell in row] == [True, True, False]
    assert {lo.name: lo.weight for lo in session.loras} == {"style": 0.3, "ink": 0.9}


def test_a_cancel_stops_the_cell_in_progress_and_each_cell_is_an_event(session):
    """Cancelled during a cell's first denoising step, the grid stops there (not after the
    cell): the cells done stay, and each of them was a GridCellDone event as it finished."""
    from lora_studio.core import events as ev

    session, _ = session
    control, seen = JobControl(), []

    def emit(event) -> None:
        seen.append(event)
        cells_done = sum(isinstance(e, ev.GridCellDone) for e in seen)
        if isinstance(event, ev.GenerationStep) and cells_done == 1:
            control.cancel()

    grid = strength_grid(session, REQUEST, GridAxis("style", [0.0, 0.5, 1.0]), control=control,
                         emit=emit)
    assert [cell is not None for row in grid.cells for cell in row] == [True, False, False]
    done = [e for e in seen if isinstance(e, ev.GridCellDone)]
    assert [(e.row, e.col, e.rows, e.cols) for e in done] == [(0, 0, 3, 1)]
    assert np.array_equal(pixels(done[0].image), pixels(grid.cells[0][0]))
    after = seen[seen.index(done[0]) + 1:]
    assert [type(e) for e in after] == [ev.GenerationStep]  # stopped after one step of three
    assert isinstance(seen[0], ev.JobStarted) and seen[0].total_steps == 3


def test_strengths_are_read_from_text_or_refused_by_name():
    from lora_studio.core.errors import ConfigError
    from lora_studio.core.generate.grid import parse_strengths

    assert parse_strengths("0, 0.25 0.5;1, -0.5") == [0.0, 0.25, 0.5, 1.0, -0.5]
    for text, what in (("0, x", "'x' is not a number"), ("", "no strengths"),
                       (" , ", "no strengths"), ("nan", "not a number"),
                       (",".join(["1"] * 17), "at most 16")):
        with pytest.raises(ConfigError, match=what) as caught:
            parse_strengths(text, "rows")
        assert caught.value.key == "rows"


def test_the_cli_writes_the_labelled_grid(tiny_model_dir, loras, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    run = subprocess.run([sys.executable, "-m", "lora_studio", "grid", "--model",
                          str(tiny_model_dir), "--lora", str(loras[0]), "--strengths", "0,1",
                          "--lora2", str(loras[1]), "--strengths2", "0,0.5",
                          "--prompt", "a red circle", "--steps", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "cell 4/4" in run.stdout
    assert Image.open(out).size == (LABEL * 3 + 2 * 64, LABEL + 2 * 64)


def test_the_cli_grid_names_a_strength_it_cannot_read(tiny_model_dir, loras, tmp_path, capsys):
    from lora_studio.cli import main

    assert main(["grid", "--model", str(tiny_model_dir), "--lora", str(loras[0]),
                 "--strengths", "0,x", "--prompt", "p", "--out", str(tmp_path / "g2.png")]) == 2
    assert "--strengths" in capsys.readouterr().err


def test_the_cli_grid_keeps_block_weights_at_every_strength(tiny_model_dir, loras, tmp_path,
                                                            one_torch_thread):
    """`--lbw NONE`: every block at 0, so strength 1 renders the base like strength 0."""
    from PIL import Image

    from lora_studio.cli import main

    out = tmp_path / "grid.png"
    assert main(["grid", "--model", str(tiny_model_dir), "--lora", str(loras[0]), "--strengths",
                 "0,1", "--lbw", "NONE", "--prompt", "a red circle", "--steps", "2",
                 "--out", str(out)]) == 0
    grid = pixels(Image.open(out))
    zero, one = (grid[LABEL + r * 64:LABEL + (r + 1) * 64, LABEL * 3:] for r in (0, 1))
    assert np.abs(zero - one).max() <= 1
    assert main(["grid", "--model", str(tiny_model_dir), "--lora", str(loras[0]),
                 "--lbw", "1,2,3", "--prompt", "p", "--out", str(tmp_path / "g.png")]) != 0
