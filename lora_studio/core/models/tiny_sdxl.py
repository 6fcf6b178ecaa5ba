"""A tiny SDXL model with the real architecture and random weights (tests, first runs).

Everything SDXL has that SD 1.x lacks is here at toy size: the UNet's "text_time" added
conditioning (pooled text embedding + size/crop ids), two transformer layers in the deeper
attention blocks, and two text encoders whose outputs are concatenated for cross-attention.
The encoders have DIFFERENT hidden sizes (32 and 64): diffusers' single-file loader tells them
apart by width, so equal sizes would load encoder 1's weights into encoder 2.
"""

from __future__ import annotations

from pathlib import Path

from lora_studio.core.models.tiny import save_pipeline_folder, tiny_text_config, tiny_vae
from lora_studio.core.paths import configs_dir

TINY_SDXL_RESOLUTION = 64  # pixels; latents are 32x32
TE1_HIDDEN = 32
TE2_HIDDEN = 64
TE2_PROJECTION = 32
ADD_TIME_DIM = 8


def tiny_sdxl_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    """A StableDiffusionXLPipeline of tiny random-weight components (same seed, same weights)."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(configs_dir() / "sdxl" / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(configs_dir() / "sdxl" / "tokenizer_2")

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_SDXL_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=TE1_HIDDEN + TE2_HIDDEN,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADD_TIME_DIM,
        projection_class_embeddings_input_dim=ADD_TIME_DIM * 6 + TE2_PROJECTION,
        norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = tiny_vae(TINY_SDXL_RESOLUTION, scaling_factor=0.13025)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(tiny_text_config(tokenizer, TE1_HIDDEN, "quick_gelu", TE1_HIDDEN))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(
        tiny_text_config(tokenizer_2, TE2_HIDDEN, "gelu", TE2_PROJECTION))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type=prediction_type,
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def make_tiny_sdxl_model(
    out_dir: str | Path, seed: int = 0, prediction_type: str = "epsilon"
) -> Path:
    """Write a complete diffusers-format tiny SDXL model to `out_dir` (atomically); return it."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
    out_dir = Path(out_dir)
    pipe = tiny_sdxl_pipeline(seed, prediction_type)
    save_pipeline_folder(pipe, out_dir)
    return out_dir
