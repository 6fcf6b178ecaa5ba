"""LoRA files for tests: random non-zero PEFT adapters saved by diffusers' own writer."""

from __future__ import annotations

from pathlib import Path


ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


def make_lora_file(model_dir: Path, out_path: Path, seed: int, *,
                   targets: tuple[str, ...] = ATTENTION, **unet_kw) -> Path:
    """A random rank-4 PEFT LoRA on a UNet's attention (the tiny one unless `unet_kw` given);
    `targets` names other modules (e.g. "conv1" for a LoCon's resnet convs)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    if unet_kw:
        unet = UNet2DConditionModel(**unet_kw)
    else:
        unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=list(targets)))
    tmp = out_path.parent / f".{out_path.stem}-dir"
    StableDiffusionPipeline.save_lora_weights(
        tmp, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True)
    (tmp / "pytorch_lora_weights.safetensors").rename(out_path)
    tmp.rmdir()
    return out_path
