"""Per-step previews during generation: the step callback and a cheap latents → RGB image.

The preview is a fixed linear map of the latents (no VAE decode): each of the 4 latent channels
contributes a fixed RGB vector, the approximation ComfyUI and A1111 use for their "Approx cheap"
live previews (factors fitted for the SD 1.x/2.x VAE and for the SDXL VAE). It costs one tiny
matrix product per step, so a preview can be sent every step. The image is at latent resolution
(1/8 of the output for real models, 1/2 for the tiny test model); the viewer scales it. For the
random-weight tiny model the colours mean nothing; the mechanics are the same.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from lora_studio.core import events

# rows: latent channels 0..3; columns: R, G, B
_SD_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
_SD_BIAS = (0.0, 0.0, 0.0)
_SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
_SDXL_BIAS = (0.1084, -0.0175, -0.0011)


def latents_to_preview(latents, arch: str = "sd1", index: int = 0):
    """A PIL RGB image approximating what `latents[index]` (shape [B, 4, h, w]) will decode to."""
    import torch
    from PIL import Image

    factors, bias = (_SDXL_FACTORS, _SDXL_BIAS) if arch == "sdxl" else (_SD_FACTORS, _SD_BIAS)
    sample = latents[index].detach().to("cpu", torch.float32)  # [4, h, w]
    weight = torch.tensor(factors, dtype=torch.float32)  # [4, 3]
    rgb = torch.einsum("chw,cr->hwr", sample[:4], weight) + torch.tensor(bias)
    rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(rgb)  # uint8 [h, w, 3] → RGB


def step_callback(emit: events.Emit, control: Any, index: int, arch: str) -> Callable:
    """diffusers' callback_on_step_end: a preview event per step; cancel via `_interrupt`."""

    def on_step_end(pipe, step: int, timestep, kwargs: dict) -> dict:
        total = int(getattr(pipe, "_num_timesteps", 0) or 0) or step + 1
        emit(events.GenerationStep(step + 1, total, index,
                                   latents_to_preview(kwargs["latents"], arch)))
        if control is not None:
            control.wait_if_paused()
            if control.cancelled:
                pipe._interrupt = True  # the pipeline skips the remaining steps
        return kwargs

    return on_step_end
