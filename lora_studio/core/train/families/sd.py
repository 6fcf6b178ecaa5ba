"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, a UNet conditioned on its last hidden
states, epsilon or v-prediction (the scheduler's `prediction_type`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lora_studio.core.train.families.base import Conditioning, ModelFamily, SampleGeometry


class StableDiffusionFamily(ModelFamily):
    pipeline_class = "StableDiffusionPipeline"

    def __init__(self, parts: Any):
        super().__init__(parts)
        from lora_studio.core.models.architecture import lora_family

        self.lora_arch = lora_family(parts.source.arch)
        self.text_encoders = {"text_encoder": parts.text_encoder}
        self.tokenizers = {"text_encoder": parts.tokenizer}

    def encode(self, captions: list[str], max_token_length: int) -> Conditioning:
        from lora_studio.core.dataset.captions import encode_captions

        return Conditioning(encode_captions(self.tokenizers["text_encoder"],
                                            self.text_encoders["text_encoder"], captions,
                                            max_token_length))

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                geometry: Sequence[SampleGeometry], dtype: torch.dtype) -> torch.Tensor:
        return self.denoiser(noisy.to(dtype), timesteps, cond.hidden.to(dtype)).sample

    def preview_pipeline(self, scheduler, unwrap: Callable[[Any], Any]):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            unet=unwrap(self.denoiser), text_encoder=unwrap(self.text_encoders["text_encoder"]),
            vae=self.vae, tokenizer=self.tokenizers["text_encoder"], scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
