"""The seam between the training loop and a model family.

A `ModelFamily` holds one loaded base model and answers everything the loop must not know:
which networks there are and which of them take a LoRA, how captions become conditioning
(hidden states, a pooled embedding, added conditioning such as SDXL's size / crop ids), how
the denoiser is called, the training objective, the preview pipeline and the name and layout
of the exported LoRA. The loop in `trainer.py` only calls these methods, so adding a family is
one module here plus its tests.

A flow-matching transformer family (SD3, FLUX) plugs in the same way: `load` returns its
transformer as `denoiser`, its two or three text encoders in `text_encoders`; `encode` returns
their joint hidden states and the pooled CLIP embedding; `predict` calls the transformer with
`pooled_projections` (and FLUX's image / text ids from `SampleGeometry`); `objective` returns a
flow-matching objective (noise + sigma-interpolated latents, velocity target, logit-normal
timesteps) with the same four methods as `DiffusionObjective`; the preview pipeline is its
diffusers pipeline, and its LoRA is exported with `transformer.` names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Conditioning:
    """What a batch of captions gives the denoiser: hidden states [b, tokens, width], and for
    families that have one a pooled embedding [b, width2]."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        pooled = [c.pooled for c in items]
        return Conditioning(torch.cat([c.hidden for c in items]),
                            None if pooled[0] is None else torch.cat(pooled))

    def to(self, device, dtype: torch.dtype | None = None) -> Conditioning:
        def move(t):
            return None if t is None else t.to(device, dtype) if dtype else t.to(device)
        return Conditioning(move(self.hidden), move(self.pooled))

    def row(self, k: int) -> Conditioning:
        """Sample `k` alone, as float32 on the CPU (what the cache keeps)."""
        def take(t):
            return None if t is None else t[k:k + 1].detach().float().cpu()
        return Conditioning(take(self.hidden), take(self.pooled))


@dataclass(frozen=True)
class SampleGeometry:
    """Where a training sample's pixels come from, in (height, width) order as SDXL's time ids
    take them: the image's size before resizing, the crop's (top, left) in the resized image
    (measured in the mirrored picture when flipped) and the bucket size trained at."""

    original: tuple[int, int]
    crop: tuple[int, int]
    target: tuple[int, int]


class ModelFamily:
    """One loaded base model of a family. Subclasses set `arch`-level names and implement the
    methods below; the loop reads `denoiser`, `vae` and `text_encoders` and may replace a
    trained network by its accelerate-prepared wrapper with `replace`."""

    lora_arch: str = ""  # the architecture its LoRA files are made for ("sd1", "sd2", "sdxl")
    pipeline_class: str = ""  # the diffusers pipeline previews render with

    def __init__(self, parts: Any):
        self.source = parts.source
        self.denoiser = parts.unet
        self.vae = parts.vae
        self.noise_scheduler = parts.noise_scheduler
        self.scheduler_config = dict(parts.scheduler_config or parts.noise_scheduler.config)
        self.text_encoders: dict[str, Any] = {}
        self.tokenizers: dict[str, Any] = {}

    # ------------------------------------------------------------------ networks
    def networks(self) -> dict[str, Any]:
        """Every network by component name: "unet", "text_encoder", ... (the LoRA file's
        component names)."""
        return {"unet": self.denoiser, **self.text_encoders}

    def trained_networks(self, train_text_encoder: bool) -> dict[str, Any]:
        nets = self.networks()
        return nets if train_text_encoder else {"unet": nets["unet"]}

    def replace(self, component: str, network: Any) -> None:
        if component == "unet":
            self.denoiser = network
        else:
            self.text_encoders[component] = network

    def vae_dtype(self, weight_dtype: torch.dtype) -> torch.dtype:
        """The VAE's precision in a run whose frozen weights are `weight_dtype`."""
        return weight_dtype

    # ------------------------------------------------------------------ conditioning
    def encode(self, captions: list[str], max_token_length: int) -> Conditioning:
        raise NotImplementedError

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                geometry: Sequence[SampleGeometry], dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ objective
    def objective(self, tr) -> Any:
        """The training objective for the [train] settings `tr` (noise, timesteps, target,
        loss)."""
        from lora_studio.core.train.objective import DiffusionObjective

        return DiffusionObjective(self.noise_scheduler, min_timestep=tr.min_timestep,
                                  max_timestep=tr.max_timestep, noise_offset=tr.noise_offset,
                                  min_snr_gamma=tr.min_snr_gamma)

    # ------------------------------------------------------------------ previews and export
    def preview_pipeline(self, scheduler, unwrap: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    def lora_file(self, unwrap: Callable[[Any], Any], train_text_encoder: bool):
        """The trained adapters as a `LoraFile` (canonical names, this family's architecture)."""
        from lora_studio.core.lora.formats import lora_from_peft

        nets = {name: unwrap(net) for name, net in
                self.trained_networks(train_text_encoder).items()}
        return lora_from_peft(unet=nets["unet"], text_encoder=nets.get("text_encoder"),
                              text_encoder_2=nets.get("text_encoder_2"), arch=self.lora_arch)
