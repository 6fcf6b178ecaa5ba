"""`lora-studio fuse`: the base with LoRAs baked in renders what the unfused stack renders, as
a diffusers folder and as a single-file checkpoint that `from_single_file` loads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lora_files import make_lora_file

WEIGHTS = (0.8, -0.6)


def render(pipe, seed: int = 3) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=4, guidance_scale=4.0, height=64, width=64,
                 generator=torch.Generator().manual_seed(seed)).images[0]
    return np.asarray(image, dtype=np.float32)


@pytest.fixture(scope="module")
def loras(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuse_loras")
    return [make_lora_file(tiny_model_dir, folder / f"l{i}.safetensors", seed=10 + i)
            for i in range(2)]


@pytest.fixture(scope="module")
def stacked(tiny_model_dir, loras):
    """What the unfused stack renders (both adapters at their weights), and the bare base."""
    from lora_studio.core.lora.apply import load_lora_into_pipeline
    from lora_studio.core.models.loading import load_pipeline

    pipe = load_pipeline(tiny_model_dir)
    bare = render(pipe)
    for i, path in enumerate(loras):
        load_lora_into_pipeline(pipe, path, f"l{i}")
    pipe.set_adapters(["l0", "l1"], list(WEIGHTS))
    return render(pipe), bare


def test_a_fused_folder_renders_like_the_stack(tiny_model_dir, loras, stacked, tmp_path):
    from lora_studio.core.lora.fuse import fuse_loras
    from lora_studio.core.models.loading import load_pipeline

    out = fuse_loras(tiny_model_dir, list(zip(loras, WEIGHTS)), tmp_path / "fused")
    pipe = load_pipeline(out)
    assert not any(hasattr(m, "lora_A") for m in pipe.unet.modules())  # a plain model
    fused, (with_stack, bare) = render(pipe), stacked
    assert np.abs(fused - with_stack).mean() < 0.5  # same image (8-bit rounding aside)
    assert np.abs(fused - bare).mean() > 2  # and the LoRAs did change it


def test_a_fused_checkpoint_loads_with_from_single_file(tiny_model_dir, loras, stacked,
                                                        tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    out = tmp_path / "fused.safetensors"
    args = [sys.executable, "-m", "lora_studio", "fuse", "--model", str(tiny_model_dir),
            "--lora", f"{loras[0]}:{WEIGHTS[0]}", "--lora", f"{loras[1]}:{WEIGHTS[1]}",
            "--out", str(out)]
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["modelspec.merged_from"] == "l0.safetensors:0.8, l1.safetensors:-0.6"
        assert any(k.startswith("model.diffusion_model.") for k in f.keys())
    pipe = StableDiffusionPipeline.from_single_file(str(out), config=str(tiny_model_dir),
                                                    local_files_only=True,
                                                    safety_checker=None)
    assert np.abs(render(pipe) - stacked[0]).mean() < 0.5
