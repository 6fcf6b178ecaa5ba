"""Preview images during training, rendered the way final generation renders them.

The pipeline is a plain `StableDiffusionPipeline` built from the training components themselves
(the UNet and text encoder *with the live LoRA adapter*, the VAE, the tokenizer), with the
sampler (`sample.sampler`, default "Euler a" like `lora-studio generate`) built from the base
model's own scheduler config, dropout off (eval mode), fixed prompt and seed (a CPU generator,
seeded the same for every preview). The LoRA scale inside peft is alpha / rank, exactly what a
saved LoRA loads with at strength 1, so a preview matches `generate` with the saved file at
strength 1 (up to the save precision). Images are also written to `<output>/samples/`.

Each prompt line may carry kohya's inline options (`a cat --n blurry --w 768 --h 512 --d 7 --l 6
--s 28 --ss euler_a`, see `sample_prompts.py`); what a line does not set comes from [sample] and
the dataset resolution. A preview's image carries its settings as A1111 PNG info
(`image.info["parameters"]`, also written into the PNG), so the event and the file say which
seed, size, steps, CFG scale and sampler made it.
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
    """Yield one Preview per `sample.prompts` entry, each rendered with its own options (the
    caller puts the models back in train mode afterwards). A line with an option it cannot
    read raises ConfigError before anything renders."""
    from lora_studio.core.generate.pnginfo import PARAMETERS_KEY, save_png_with_parameters
    from lora_studio.core.generate.samplers import make_scheduler
    from lora_studio.core.train.sample_prompts import sample_prompts

    prompts = sample_prompts(cfg)
    pipe = build_preview_pipeline(unet, text_encoder, vae, tokenizer, scheduler_config,
                                  cfg.sample.sampler)
    schedulers = {cfg.sample.sampler: pipe.scheduler}
    unet.eval()
    text_encoder.eval()
    samples_dir = cfg.output_dir / "samples"
    for index, sp in enumerate(prompts):
        if sp.sampler not in schedulers:
            schedulers[sp.sampler] = make_scheduler(scheduler_config, sp.sampler)
        pipe.scheduler = schedulers[sp.sampler]
        generator = torch.Generator(device="cpu").manual_seed(sp.seed)
        autocast = accelerator.autocast() if accelerator is not None else _nullcontext()
        with torch.no_grad(), autocast:
            image = pipe(sp.prompt, negative_prompt=sp.negative or None,
                         num_inference_steps=sp.steps, guidance_scale=sp.cfg,
                         height=sp.height, width=sp.width, generator=generator).images[0]
        image.info[PARAMETERS_KEY] = parameters = sp.parameters()
        save_png_with_parameters(image, samples_dir / f"step-{step:06d}-{index}.png", parameters)
        yield ev.Preview(step=step, prompt=sp.prompt, image=image, index=index)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
