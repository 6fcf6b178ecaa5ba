"""A tiny Stable Diffusion model with the real architecture and random weights.

It is what tests and first-run users get when no other model is configured: every component of
SD 1.x (UNet with cross-attention, AutoencoderKL, CLIP text encoder + tokenizer, DDPM scheduler)
at a size that trains and samples in seconds on a CPU. Same seed, same weights.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lora_studio.core.paths import configs_dir, user_data_dir

TINY_RESOLUTION = 64  # pixels; the VAE downsamples by 2, so latents are 32x32


def _tiny_components(seed: int, prediction_type: str, arch: str):
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer_dir = configs_dir() / ("sd2" if arch == "sd2" else "sd15") / "tokenizer"
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    sd2 = arch == "sd2"

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4) if sd2 else 8,
        use_linear_projection=sd2,
        norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = tiny_vae(TINY_RESOLUTION)
    torch.manual_seed(seed + 2)
    text_config = tiny_text_config(tokenizer, 32, "gelu" if sd2 else "quick_gelu", 32)
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    return unet, vae, text_encoder, tokenizer, scheduler


def tiny_text_config(tokenizer, hidden: int, act: str, projection: int):
    """A 2-layer CLIP text config with the tokenizer's real ids (so pooling finds end-of-text)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def save_pipeline_folder(pipe, out_dir: str | Path) -> None:
    """save_pretrained into a staging folder, then move it into place: never half a model, nor
    half of an earlier folder there (`fileio.replace_folder`); a full disk is a DiskFullError."""
    from lora_studio.core.fileio import (disk_full_error, is_disk_full, new_folder_mode,
                                         replace_folder)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        try:
            pipe.save_pretrained(staging, safe_serialization=True)
        except Exception as exc:
            if not is_disk_full(exc, staging):
                raise
            shutil.rmtree(staging, ignore_errors=True)
            raise disk_full_error(out_dir.parent, exc, f"{out_dir.name} was not written (an "
                                  "earlier folder of that name is unchanged).") from exc
        staging.chmod(new_folder_mode())  # mkdtemp's 0700 would hide it from other users
        replace_folder(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def tiny_vae(resolution: int, scaling_factor: float = 0.18215):
    """The tiny AutoencoderKL shared by the SD 1.x/2.x and SDXL tiny models (downsamples by 2)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=resolution,
        scaling_factor=scaling_factor,
    )


def make_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    prediction_type: str = "epsilon",
    arch: str = "sd1",
) -> Path:
    """Write a complete diffusers-format tiny SD model to `out_dir` (atomically) and return it.

    `arch` is "sd1" or "sd2" (linear projections, GELU text encoder); `prediction_type` is
    "epsilon" or "v_prediction".
    """
    from diffusers import StableDiffusionPipeline

    if arch not in ("sd1", "sd2"):
        raise ValueError(f"make_tiny_model: arch must be 'sd1' or 'sd2', not {arch!r}")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError("prediction_type must be 'epsilon' or 'v_prediction', "
                         f"not {prediction_type!r}")
    out_dir = Path(out_dir)
    unet, vae, text_encoder, tokenizer, scheduler = _tiny_components(seed, prediction_type, arch)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    save_pipeline_folder(pipe, out_dir)
    return out_dir


def shipped_tiny_shapes_dir() -> Path:
    """Where the trained Tiny Shapes model ships (resources/models/tiny-shapes)."""
    from lora_studio.core.paths import resources_dir

    return resources_dir() / "models" / "tiny-shapes"


def builtin_tiny_model_dir() -> Path:
    """The built-in model: Tiny Shapes, the small model the project trained that really draws
    (see `core.models.tiny_shapes`). Only if its files are missing (a broken install), a
    random-weight tiny model is made in the user data folder so the app still runs."""
    shipped = shipped_tiny_shapes_dir()
    if (shipped / "model_index.json").is_file():
        return shipped
    target = user_data_dir() / "models" / "tiny-sd"
    if not (target / "model_index.json").is_file():
        make_tiny_model(target, seed=0)
    return target
