"""SDXL: two CLIP text encoders and a UNet with "text_time" added conditioning.

What differs from SD 1.x / 2.x, as the kohya and diffusers SDXL scripts do it:
* Conditioning: the penultimate hidden states of both encoders, concatenated on the width
  (768 + 1280 = 2048 in SDXL base), and the second encoder's projected pooled output. With
  kohya's max_token_length 150 / 225 each window is encoded and joined as for SD 1.x; the pooled
  embedding is the first window's (sd-scripts `get_hidden_states_sdxl`).
* Added conditioning: `time_ids` = (original height, original width, crop top, crop left,
  target height, target width) per sample: the image's size before it was resized for its
  bucket, where the bucket's crop starts in the resized picture, and the bucket size.
* VAE precision: the SDXL VAE overflows in fp16 (NaN latents and black images). A VAE whose
  config says `force_upcast` (SDXL base's) stays in fp32 whatever the run's precision; one
  without it (the "fp16-fix" VAE, `madebyollin/sdxl-vae-fp16-fix`) runs in the run's precision.
* LoRA files are written with sd-scripts' SDXL names (`lora_unet_input_blocks_...`,
  `lora_te1_`, `lora_te2_`) and `sdxl_base_v1-0` metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lora_studio.core.train.families.base import Conditioning, ModelFamily, SampleGeometry


class StableDiffusionXLFamily(ModelFamily):
    lora_arch = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"

    def __init__(self, parts: Any):
        super().__init__(parts)
        self.text_encoders = {"text_encoder": parts.text_encoder,
                              "text_encoder_2": parts.text_encoder_2}
        self.tokenizers = {"text_encoder": parts.tokenizer, "text_encoder_2": parts.tokenizer_2}

    def vae_dtype(self, weight_dtype: torch.dtype) -> torch.dtype:
        if weight_dtype == torch.float16 and getattr(self.vae.config, "force_upcast", True):
            return torch.float32
        return weight_dtype

    def encode(self, captions: list[str], max_token_length: int) -> Conditioning:
        from lora_studio.core.dataset.captions import caption_token_ids, join_windows

        hidden, pooled = [], None
        for name, encoder in self.text_encoders.items():
            chunks = caption_token_ids(self.tokenizers[name], captions, max_token_length)
            batch, count, width = chunks.shape
            out = encoder(chunks.reshape(batch * count, width).to(encoder.device),
                          output_hidden_states=True)
            hidden.append(join_windows(out.hidden_states[-2], batch, count))
            if name == "text_encoder_2":  # the projected pooled output, first window
                pooled = out[0].reshape(batch, count, -1)[:, 0]
        return Conditioning(torch.cat(hidden, dim=-1), pooled)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                geometry: Sequence[SampleGeometry], dtype: torch.dtype) -> torch.Tensor:
        time_ids = torch.tensor([[*g.original, *g.crop, *g.target] for g in geometry],
                                device=noisy.device, dtype=dtype)
        added = {"text_embeds": cond.pooled.to(noisy.device, dtype), "time_ids": time_ids}
        return self.denoiser(noisy.to(dtype), timesteps, cond.hidden.to(dtype),
                             added_cond_kwargs=added).sample

    def preview_pipeline(self, scheduler, unwrap: Callable[[Any], Any]):
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=self.vae, text_encoder=unwrap(self.text_encoders["text_encoder"]),
            text_encoder_2=unwrap(self.text_encoders["text_encoder_2"]),
            tokenizer=self.tokenizers["text_encoder"],
            tokenizer_2=self.tokenizers["text_encoder_2"], unet=unwrap(self.denoiser),
            scheduler=scheduler)
