"""A tiny StableDiffusionPipeline and a fixed-seed render, shared by the LoRA tests."""

from __future__ import annotations

import numpy as np
import torch

PROMPT = "a red star on a blue background"


def tiny_pipe(model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(1234)
    return pipe(PROMPT, num_inference_steps=2, height=32, width=32, generator=generator,
                output_type="np").images[0]
