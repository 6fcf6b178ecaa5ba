"""Bake LoRAs into a base model: `lora-studio fuse --model M --lora FILE:W ... --out OUT`.

The LoRAs are loaded as adapters at their weights (`set_adapters`), fused into the base
weights (`fuse_lora`: W += w * (alpha / r) * B A for each), and the LoRA layers removed, so
the result is a plain model that renders what the stack rendered and costs what the bare base
costs. Written as one original-layout `.safetensors` checkpoint (A1111 / ComfyUI / Forge,
`from_single_file`) when OUT ends in .safetensors, else as a diffusers folder. The sources and
weights are recorded (`modelspec.merged_from` in the checkpoint's header).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lora_studio.core.errors import LoraFormatError


def fused_pipeline(model_spec: Any, items: list[tuple[str | os.PathLike[str], float]]):
    """The base pipeline with every (LoRA file, weight) of `items` fused in."""
    from lora_studio.core.lora.apply import load_lora_into_pipeline
    from lora_studio.core.lora.formats import read_lora
    from lora_studio.core.models.loading import load_pipeline

    if not items:
        raise LoraFormatError("Nothing to fuse: give at least one --lora FILE:WEIGHT.")
    for path, _weight in items:  # before the (maybe large) model is loaded
        if not Path(path).is_file():
            raise LoraFormatError(f"{path} does not exist or is not a file.",
                                  "Check the path of each LoRA to fuse.")
        read_lora(path)  # a damaged or unsupported file is refused before the model loads
    pipe = load_pipeline(model_spec)
    names = []
    for index, (path, _weight) in enumerate(items):
        report = load_lora_into_pipeline(pipe, path, f"fuse_{index}")
        names.append(report.adapter_name)
    pipe.set_adapters(names, [float(w) for _, w in items])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()  # the LoRA layers go; the fused base weights stay
    return pipe


def fuse_loras(model_spec: Any, items: list[tuple[str | os.PathLike[str], float]],
               out: str | os.PathLike[str]) -> Path:
    """Fuse and save (see the module docstring); returns where it was written."""
    from lora_studio.core.models.tiny import save_pipeline_folder

    out = Path(out)
    pipe = fused_pipeline(model_spec, items)
    merged_from = ", ".join(f"{Path(p).name}:{float(w):g}" for p, w in items)
    if out.suffix.lower() == ".safetensors":
        from lora_studio.core.models.original_layout import save_single_file

        return save_single_file(pipe, out, metadata={"modelspec.merged_from": merged_from,
                                                     "modelspec.title": out.stem})
    if out.suffix:
        raise LoraFormatError(f"{out.name}: fused models are written as a .safetensors "
                              "checkpoint or a diffusers folder (a name without extension).")
    save_pipeline_folder(pipe, out)
    return out
