"""Random-weight LoRAs for tests and demos: real peft adapters on a (tiny) pipeline, with
alpha != rank so a strength bug cannot hide."""

from __future__ import annotations

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
                "ff.net.2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def attach_random_adapters(pipe, *, rank: int = 4, alpha: float = 2.0, seed: int = 0,
                           adapter_name: str = "default", text_encoder: bool = True) -> None:
    """Add a peft LoRA adapter with non-zero random weights to the pipeline's UNet (and text
    encoder), as a kohya-style trainer would after some steps."""
    import torch
    from peft import LoraConfig

    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=UNET_TARGETS,
                                     init_lora_weights=False), adapter_name=adapter_name)
    if text_encoder:
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TEXT_TARGETS,
                            init_lora_weights=False)
        pipe.text_encoder.add_adapter(config, adapter_name=adapter_name)


def make_random_lora(model_dir, *, rank: int = 4, alpha: float = 2.0, seed: int = 0):
    """A LoraFile with random weights for the model in `model_dir` (a diffusers folder)."""
    from diffusers import StableDiffusionPipeline

    from lora_studio.core.lora.formats import lora_from_peft

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    attach_random_adapters(pipe, rank=rank, alpha=alpha, seed=seed)
    return lora_from_peft(pipe.unet, pipe.text_encoder)
