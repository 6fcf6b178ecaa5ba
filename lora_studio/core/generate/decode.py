"""Latents to a picture: the one VAE decode Generate and the training previews share.

diffusers' pipelines decode inside `__call__`; the studio asks them for latents and decodes
here instead, because the trainer's pipelines mix precisions a pipeline's own decode does not
expect (an fp32 SDXL VAE beside an fp16 UNet). The arithmetic is the pipelines' own: SDXL's
`latents_mean` / `latents_std` when the VAE config has them, else `latents / scaling_factor`
(+ `shift_factor`), decoded outside any autocast, in fp32 when an fp16 VAE says
`force_upcast` (an fp16 SDXL VAE overflows to black otherwise), then the pipeline's image
processor (denormalised to 0..255).
"""

from __future__ import annotations

from typing import Any

import torch


def decode_latents(pipe: Any, latents: torch.Tensor) -> list[Any]:
    """The pipeline's `latents` [b, c, h, w] as PIL images."""
    vae = pipe.vae
    config = vae.config
    upcast = vae.dtype == torch.float16 and bool(getattr(config, "force_upcast", False))
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        latents = latents.to(vae.dtype)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, latents.shape[1], 1, 1)
            latents = (latents * torch.tensor(std).view(shape).to(latents)
                       / config.scaling_factor + torch.tensor(mean).view(shape).to(latents))
        else:
            latents = latents / config.scaling_factor
            shift = getattr(config, "shift_factor", None)
            if shift:
                latents = latents + shift
        with torch.no_grad(), torch.autocast(latents.device.type, enabled=False):
            image = vae.decode(latents, return_dict=False)[0]
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    return pipe.image_processor.postprocess(image, output_type="pil")
