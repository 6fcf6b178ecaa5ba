"""Model families the trainer can train a LoRA for (see `base.ModelFamily`)."""

from __future__ import annotations

from typing import Any

from lora_studio.core.train.families.base import Conditioning, ModelFamily, SampleGeometry

# LoRA family (models.architecture.lora_family: SD 2.x epsilon and v share one) -> the class
# that trains it, by import path (a family's diffusers imports wait until it is used)
_FAMILIES = {
    "sd1": "lora_studio.core.train.families.sd:StableDiffusionFamily",
    "sd2": "lora_studio.core.train.families.sd:StableDiffusionFamily",
    "sdxl": "lora_studio.core.train.families.sdxl:StableDiffusionXLFamily",
}


def family_class(arch: str) -> type[ModelFamily]:
    """The family that trains LoRAs for architecture `arch` ("sd1", "sd2", "sd2-v", "sdxl")."""
    import importlib

    from lora_studio.core.errors import StudioError
    from lora_studio.core.models.architecture import lora_family

    try:
        path = _FAMILIES[lora_family(arch)]
    except (KeyError, ValueError):
        raise StudioError(f"LoRA Studio cannot train LoRAs for {arch!r} models yet.",
                          "Pick an SD 1.x, SD 2.x or SDXL base model in model.base.") from None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def load_family(spec: Any, *, torch_dtype: Any = None, config_dir: Any = None) -> ModelFamily:
    """Load the base model `spec` (see `models.loading.resolve_model`) into its family;
    `config_dir` is the config folder of a single-file checkpoint of a non-standard size."""
    from lora_studio.core.models.loading import load_components, resolve_model

    source = resolve_model(spec)
    cls = family_class(source.arch)  # refuse before loading gigabytes
    return cls(load_components(source, torch_dtype=torch_dtype, config_dir=config_dir))


__all__ = ["Conditioning", "ModelFamily", "SampleGeometry", "family_class", "load_family"]
