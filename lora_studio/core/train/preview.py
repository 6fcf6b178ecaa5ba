"""Preview images during training, rendered the way final generation renders them.

The pipeline is the model family's plain diffusers pipeline (`StableDiffusionPipeline`,
`StableDiffusionXLPipeline`) built from the training networks themselves (the UNet and text
encoders *with the live LoRA adapters*, the VAE, the tokenizers), with the
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


def build_preview_pipeline(family, sampler: str, unwrap=lambda model: model):
    """The family's text-to-image pipeline around the live training networks (LoRA adapters
    included), with `sampler` built from the base model's scheduler config."""
    from lora_studio.core.generate.samplers import make_scheduler

    pipe = family.preview_pipeline(make_scheduler(family.scheduler_config, sampler), unwrap)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def decode_latents(pipe, latents: torch.Tensor):
    """The pipeline's latents as a PIL image, decoded in the VAE's own precision outside any
    autocast (an fp32 SDXL VAE must not be autocast back to fp16, where it overflows)."""
    vae = pipe.vae
    config = vae.config
    latents = latents.to(vae.dtype)
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, latents.shape[1], 1, 1)
        latents = (latents * torch.tensor(std).view(shape).to(latents) / config.scaling_factor
                   + torch.tensor(mean).view(shape).to(latents))
    else:
        latents = latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0)
    with torch.autocast(latents.device.type, enabled=False):
        image = vae.decode(latents).sample
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


def render_previews(cfg: TrainConfig, step: int, family, *, unwrap=lambda model: model,
                    accelerator=None) -> Iterator[ev.Preview]:
    """Yield one Preview per `sample.prompts` entry, each rendered with its own options (the
    caller puts the networks back in train mode afterwards). A line with an option it cannot
    read raises ConfigError before anything renders."""
    from lora_studio.core.generate.pnginfo import PARAMETERS_KEY, save_png_with_parameters
    from lora_studio.core.generate.samplers import make_scheduler
    from lora_studio.core.train.sample_prompts import sample_prompts

    prompts = sample_prompts(cfg)
    pipe = build_preview_pipeline(family, cfg.sample.sampler, unwrap)
    schedulers = {cfg.sample.sampler: pipe.scheduler}
    for network in family.networks().values():
        unwrap(network).eval()
    samples_dir = cfg.output_dir / "samples"
    for index, sp in enumerate(prompts):
        if sp.sampler not in schedulers:
            schedulers[sp.sampler] = make_scheduler(family.scheduler_config, sp.sampler)
        pipe.scheduler = schedulers[sp.sampler]
        generator = torch.Generator(device="cpu").manual_seed(sp.seed)
        autocast = accelerator.autocast() if accelerator is not None else _nullcontext()
        with torch.no_grad():
            with autocast:
                latents = pipe(sp.prompt, negative_prompt=sp.negative or None,
                               num_inference_steps=sp.steps, guidance_scale=sp.cfg,
                               height=sp.height, width=sp.width, generator=generator,
                               output_type="latent").images
            image = decode_latents(pipe, latents)
        image.info[PARAMETERS_KEY] = parameters = sp.parameters()
        save_png_with_parameters(image, samples_dir / f"step-{step:06d}-{index}.png", parameters)
        yield ev.Preview(step=step, prompt=sp.prompt, image=image, index=index)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
