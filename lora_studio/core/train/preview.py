"""Preview images during training, rendered the way final generation renders them.

The pipeline is a plain `StableDiffusionPipeline` built from the training components themselves
(the UNet and text encoder *with the live LoRA adapter*, the VAE, the tokenizer), with the
sampler (`sample.sampler`, default "Euler a" like `lora-studio generate`) built from the base
model's own scheduler config, dropout off (eval mode), fixed prompt and seed (a CPU generator,
seeded the same for every preview). The LoRA scale inside peft is alpha / rank, exactly what a
saved LoRA loads with at strength 1, so a preview matches `generate` with the saved file at
strength 1 (up to the save precision). Images are also written to `<output>/samples/`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from lora_studio.core import events as ev
from lora_studio.core.train.config import TrainConfig


def build_preview_pipeline(unet, text_encoder, vae, tokenizer, scheduler_config, sampler: str):
    from diffusers import StableDiffusionPipeline

    from lora_studio.core.generate.samplers import make_scheduler

    pipe = StableDiffusionPipeline(
        unet=unet, text_encoder=text_encoder, vae=vae, tokenizer=tokenizer,
        scheduler=make_scheduler(scheduler_config, sampler), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render_previews(cfg: TrainConfig, step: int, *, unet, text_encoder, vae, tokenizer,
                    scheduler_config, accelerator=None) -> Iterator[ev.Preview]:
    """Yield one Preview per `sample.prompts` entry (the caller puts the models back in
    train mode afterwards)."""
    from lora_studio.core.fileio import atomic_path

    s = cfg.sample
    pipe = build_preview_pipeline(unet, text_encoder, vae, tokenizer, scheduler_config,
                                  s.sampler)
    unet.eval()
    text_encoder.eval()
    samples_dir = cfg.output_dir / "samples"
    for index, prompt in enumerate(s.prompts):
        generator = torch.Generator(device="cpu").manual_seed(s.seed)
        autocast = accelerator.autocast() if accelerator is not None else _nullcontext()
        with torch.no_grad(), autocast:
            image = pipe(prompt, negative_prompt=s.negative_prompt or None,
                         num_inference_steps=s.steps, guidance_scale=s.cfg,
                         height=cfg.dataset.resolution, width=cfg.dataset.resolution,
                         generator=generator).images[0]
        with atomic_path(samples_dir / f"step-{step:06d}-{index}.png") as tmp:
            image.save(tmp, format="PNG")
        yield ev.Preview(step=step, prompt=prompt, image=image, index=index)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
