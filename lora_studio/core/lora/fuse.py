"""Bake LoRAs of any kind into a base model:
`lora-studio fuse --model M --lora FILE[:W][:lbw=BLOCKS] ... --out OUT`.

Every layer the files patch gets what the session renders it with (`deltas`: plain LoRA / LoCon,
LoHa, LoKr, DoRA, full-difference, at each file's weight and block weights):

    W = W0 + sum_i s_i(m) * dW_i(m)          b = b0 + sum_i s_i(m) * diff_b_i(m)

each dW made from the layer's own base weight W0 (a DoRA update is `W_dora - W0` of the
unpatched layer, as the session computes it), in float32, then cast to the layer's dtype. The
result is a plain model that renders what the stack rendered and costs what the bare base costs.
Modules the model has no layer for are skipped, as when the session loads the file; a file made
for another architecture, one whose layers have other sizes or one that fits nothing is refused
(the checks of `apply.load_lora_into_pipeline`), before any weight changes.

Written as one original-layout `.safetensors` checkpoint (A1111 / ComfyUI / Forge,
`from_single_file`) when OUT ends in .safetensors, else as a diffusers folder. The sources,
weights and block weights are recorded (`modelspec.merged_from` in the checkpoint's header).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.deltas import (
    MixInput,
    ModelBase,
    arch_label,
    block_factor,
    module_term,
    read_inputs,
)
from lora_studio.core.lora.lycoris import NetworkModule

Item = tuple  # (LoRA file or path, weight[, BlockWeights | None])


def fused_pipeline(model_spec: Any, items: list[Item]):
    """The base pipeline with every (LoRA file, weight[, block weights]) of `items` baked in."""
    return _fused(model_spec, read_inputs(items, action="fuse"))


def _fused(model_spec: Any, inputs: list[MixInput]):
    from lora_studio.core.models.loading import load_pipeline

    pipe = load_pipeline(model_spec)  # after every file was read: a bad one is refused at once
    bake(pipe, inputs)
    return pipe


def bake(pipe: Any, inputs: list[MixInput]) -> None:
    """Add every input's update to the pipeline's weights (see the module docstring)."""
    base = ModelBase.of_pipeline(pipe)
    layout = base.layout() if any(i.block_weights is not None for i in inputs) else None
    groups = _layer_groups(pipe, inputs, base)  # every file checked before a weight changes
    with torch.no_grad():
        for layer, parts in groups.values():
            _bake_layer(layer, parts, inputs, base, layout)


def _layer_groups(pipe: Any, inputs: list[MixInput], base: ModelBase
                  ) -> dict[int, tuple[torch.nn.Module, list[tuple[int, str]]]]:
    """id(layer) -> (layer, [(input index, module name)]) of every module that fits."""
    from lora_studio.core.lora.apply import _shape_problem, pipeline_arch

    model_arch = pipeline_arch(pipe)
    groups: dict[int, tuple[torch.nn.Module, list[tuple[int, str]]]] = {}
    for index, inp in enumerate(inputs):
        arch = inp.network.arch
        if arch is not None and arch != model_arch:
            raise LoraFormatError(f"{inp.name} was made for {arch_label(arch)}, this model is "
                                  f"{arch_label(model_arch)}.",
                                  f"Fuse it into a {arch_label(arch)} model.")
        matched, misfits = [], []
        for name, module in inp.network.modules.items():
            layer = base.layer(name)
            if layer is None:
                continue
            problem = _shape_problem(layer, module)
            if not problem and _bias_update(module) and layer.bias is None:
                raise LoraFormatError(
                    f"{inp.name}: module {name} adds to a bias (diff_b), and that layer of "
                    "this model has none; a fused model cannot hold it.",
                    "Fuse it into the model it was made for, or use it in the Mix / generate.")
            if problem:
                misfits.append(f"{name} {problem}")
            else:
                matched.append((layer, name))
        if misfits:
            raise LoraFormatError(
                f"{inp.name} does not fit this model ({arch_label(model_arch)}): "
                f"{len(misfits)} layer(s) have other sizes, e.g. {misfits[0]}.",
                "Fuse it into the model family it was trained for.")
        if not matched:
            raise LoraFormatError(f"{inp.name} fits none of this model's layers; fusing it would "
                                  "change nothing.", "Check that it is a LoRA for this model.")
        for layer, name in matched:
            groups.setdefault(id(layer), (layer, []))[1].append((index, name))
    return groups


def _bake_layer(layer: torch.nn.Module, parts: list[tuple[int, str]], inputs: list[MixInput],
                base: ModelBase, layout) -> None:
    w0 = layer.weight
    delta = torch.zeros(w0.shape, dtype=torch.float32, device=w0.device)
    bias = None
    for index, name in parts:  # every update made from the unchanged W0
        inp = inputs[index]
        scale = inp.weight * block_factor(inp.block_weights, name, layout)
        if scale == 0.0:
            continue
        term = module_term(inp, index, name, scale, base)
        delta += term.matrix().reshape(w0.shape).to(device=w0.device, dtype=torch.float32)
        if term.bias is not None:
            extra = term.bias.to(w0.device)
            bias = extra if bias is None else bias + extra
    layer.weight.copy_((w0.float() + delta).to(w0.dtype))
    if bias is not None:
        layer.bias.copy_((layer.bias.float() + bias).to(layer.bias.dtype))


def _bias_update(module) -> bool:
    return isinstance(module, NetworkModule) and "diff_b" in module.tensors


def fuse_loras(model_spec: Any, items: list[Item], out: str | os.PathLike[str]) -> Path:
    """Fuse and save (see the module docstring); returns where it was written."""
    from lora_studio.core.models.tiny import save_pipeline_folder

    out = Path(out)
    inputs = read_inputs(items, action="fuse")
    if out.suffix and out.suffix.lower() != ".safetensors":
        raise LoraFormatError(f"{out.name}: fused models are written as a .safetensors "
                              "checkpoint or a diffusers folder (a name without extension).")
    pipe = _fused(model_spec, inputs)
    merged_from = ", ".join(inp.label for inp in inputs)
    if out.suffix.lower() == ".safetensors":
        from lora_studio.core.models.original_layout import save_single_file

        return save_single_file(pipe, out, metadata={"modelspec.merged_from": merged_from,
                                                     "modelspec.title": out.stem})
    save_pipeline_folder(pipe, out)
    return out
