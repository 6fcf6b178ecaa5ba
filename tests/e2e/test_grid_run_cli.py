"""`lora-studio grid --run`: a real subprocess turns a training run's folder into one PNG, a
column per saved step (checkpoints exported on the way), with the run's own preview prompts,
seed and base model; a folder that is no run, or both --lora and --run, is a message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.generate.grid import LABEL
from run_files import PROMPTS, make_training_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).parents[2]))
    return subprocess.run([sys.executable, "-m", "lora_studio", "grid", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_grid_over_a_runs_steps_writes_one_labelled_png(tiny_model_dir, tmp_path):
    from lora_studio.core.generate.session import GenerationRequest, GenerationSession

    run = make_training_run(tiny_model_dir, tmp_path)  # its config names tiny_model_dir
    out = tmp_path / "steps.png"
    proc = run_cli("--run", str(run), "--strength", "0.9", "--steps", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "4 saved states of t: step 1, step 2, step 3, step 4 final." in proc.stdout
    assert "Exported the checkpoint at step 1 as t-step1.safetensors." in proc.stdout
    assert "cell 8/8" in proc.stdout and (run / "t-step3.safetensors").is_file()
    grid = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    height, width = grid.shape[:2]
    assert height == 2 * LABEL + 2 * 64 and width > 4 * 64  # two prompts × four steps
    # The bottom-right cell: the final LoRA at 0.9, the run's second preview prompt and seed.
    session = GenerationSession(tiny_model_dir)
    session.add_lora(run / "t.safetensors", 0.9)
    direct = session.generate(GenerationRequest(PROMPTS[1], steps=2, cfg=5.0, seed=7))[0]
    cell = grid[height - 64:, width - 64:]
    assert np.abs(cell - np.asarray(direct.image.convert("RGB"), dtype=np.int16)).max() <= 1


def test_grid_over_a_run_refuses_what_is_not_one(tiny_model_dir, tmp_path, capsys):
    from lora_studio.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["grid", "--run", str(empty), "--out", str(tmp_path / "g.png")]) == 2
    assert "holds no LoRA files of a training run" in capsys.readouterr().err
    assert main(["grid", "--out", str(tmp_path / "g.png")]) == 2
    assert "either --lora" in capsys.readouterr().err
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"")
    assert main(["grid", "--run", str(empty), "--lora", str(lora), "--prompt", "p",
                 "--out", str(tmp_path / "g.png")]) == 2
    assert not (tmp_path / "g.png").exists()
