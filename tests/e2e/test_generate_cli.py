"""`lora-studio generate` end to end: a real subprocess writes PNGs A1111 can read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from lora_files import make_lora_file
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).parents[2]))
    return subprocess.run([sys.executable, "-m", "lora_studio", "generate", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_generate_writes_pngs_with_a1111_parameters(tiny_model_dir, tmp_path):
    from lora_studio.core.generate.pnginfo import parse_parameters
    from lora_studio.core.lora.hashing import short_hash

    style = make_lora_file(tiny_model_dir, tmp_path / "style.safetensors", seed=1)
    ink = make_lora_file(tiny_model_dir, tmp_path / "ink.safetensors", seed=2)
    out = tmp_path / "out"
    proc = run_cli("--model", str(tiny_model_dir), "--lora", f"{style}:0.7", "--lora", str(ink),
                   "--prompt", "a red circle on blue", "--negative", "blurry", "--steps", "3",
                   "--seed", "42", "--count", "2", "--sampler", "DPM++ 2M Karras",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "style.safetensors: 32/32 modules matched" in proc.stdout
    assert "ink.safetensors: 32/32 modules matched" in proc.stdout

    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00000-42.png", "00001-43.png"]
    for path in files:
        assert str(path) in proc.stdout  # each saved file is printed
    for path, seed in zip(files, (42, 43)):
        with Image.open(path) as image:
            assert image.size == (64, 64)
            text = image.text["parameters"]
        lines = text.split("\n")
        assert lines[0] == "a red circle on blue, <lora:style:0.7>, <lora:ink:1>"
        assert lines[1] == "Negative prompt: blurry"
        assert (f"Steps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
                f"Seed: {seed}, Size: 64x64, ") in lines[2]
        assert (f'Lora hashes: "style: {short_hash(style)}, ink: {short_hash(ink)}"'
                in lines[2])
        params = parse_parameters(text)
        assert [(lo["name"], lo["weight"]) for lo in params["loras"]] == [("style", 0.7),
                                                                          ("ink", 1.0)]


def test_a_lora_for_another_model_fails_with_the_reason(tiny_model_dir, tmp_path, capsys):
    """In-process through `cli.main` (the same handler as the subprocess, without the start-up)."""
    from lora_studio.cli import main

    wide = make_lora_file(tiny_model_dir, tmp_path / "wide.safetensors", seed=3,
                          sample_size=32, block_out_channels=(64, 128), layers_per_block=1,
                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                          cross_attention_dim=32, norm_num_groups=32)
    out = tmp_path / "out"
    code = main(["generate", "--model", str(tiny_model_dir), "--lora", f"{wide}:0.5",
                 "--prompt", "a cat", "--steps", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert "error:" in err and "does not fit this model" in err
    assert not out.exists() or not any(out.iterdir())


def test_a_damaged_lora_is_refused_before_the_model_loads(tmp_path):
    bad = tmp_path / "half.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # header cut short
    proc = subprocess.run(
        [sys.executable, "-m", "lora_studio", "generate", "--model", str(tmp_path / "no-model"),
         "--lora", f"{bad}:0.7", "--prompt", "x", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    # The LoRA is named, not the (missing) model: the file was checked first.
    assert "half.safetensors" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_block_weights_on_the_command_line_reach_the_png_info(tiny_model_dir, tmp_path, capsys):
    from lora_studio.cli import main
    from lora_studio.core.generate.pnginfo import parse_parameters, read_png_parameters

    style = make_lora_file(tiny_model_dir, tmp_path / "style.safetensors", seed=1)
    out = tmp_path / "out"
    assert main(["generate", "--model", str(tiny_model_dir), "--lora",
                 f"{style}:0.8:lbw=OUTALL", "--prompt", "a cat", "--steps", "2", "--seed", "3",
                 "--out", str(out)]) == 0
    assert "block weights OUTALL" in capsys.readouterr().out
    (png,) = out.glob("*.png")
    params = parse_parameters(read_png_parameters(png))
    assert params["prompt"] == "a cat, <lora:style:0.8:lbw=OUTALL>"

    assert main(["generate", "--model", str(tiny_model_dir), "--lora",
                 f"{style}:0.8:lbw=OUTALL:start=0.5", "--prompt", "a cat", "--steps", "2",
                 "--seed", "3", "--out", str(tmp_path / "late")]) == 0
    assert "starts at 50% of the steps" in capsys.readouterr().out
    (late,) = (tmp_path / "late").glob("*.png")
    assert parse_parameters(read_png_parameters(late))["extra"]["Lora starts"] == "style: 0.5"

    code = main(["generate", "--model", str(tiny_model_dir), "--lora", f"{style}:0.8:lbw=1,0",
                 "--prompt", "a cat", "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert code != 0 and "17 numbers" in err and "got 2" in err
