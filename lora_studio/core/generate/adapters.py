"""Active adapters and their strengths on a pipeline: plain weights or per-block weights.

A LoRA without block weights gets its float through `set_adapters`. One with block weights gets
diffusers' dict form (`BlockWeights.to_diffusers`), which sets the text encoder and every
transformer block. diffusers cannot name the rest of the UNet in that form: LoCon conv layers
in resnets and samplers would be left at scale 1.0 whatever the strength (and layers outside
down / mid / up, e.g. `conv_in`, make its lookup fail), so a second pass sets those modules
from `BlockWeights.module_factor`. When diffusers' dict form cannot be used at all on this UNet
the pass sets every module of that adapter itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lora_studio.core.lora.block_weights import BlockWeights, UNetLayout, normalized

# (adapter name, strength, block weights or None)
ActiveAdapter = tuple[str, float, "BlockWeights | None"]
_TRANSFORMER_PARENTS = ("down_blocks.", "up_blocks.", "mid_block.")


def set_adapter_weights(pipe: Any, active: Sequence[ActiveAdapter]) -> None:
    """Activate exactly `active` on `pipe` at their strengths (block weights where given)."""
    names = [name for name, _, _ in active]
    if not any(normalized(bw) is not None for _, _, bw in active):
        pipe.set_adapters(names, [float(w) for _, w, _ in active])
        return
    unet = pipe.unet
    layout = UNetLayout.of(unet)
    dict_ok = _dict_form_fits(unet, layout)
    parts = _adapter_parts(pipe)
    weights: list[Any] = []
    for name, weight, bw in active:
        bw = normalized(bw)
        if bw is None:
            weights.append(float(weight))
            continue
        encoders = tuple(p for p in parts.get(name, ()) if p.startswith("text_encoder"))
        if dict_ok:
            weights.append(bw.to_diffusers(weight, layout, encoders))
        else:
            weights.append({**{e: weight * bw.text_encoder for e in encoders},
                            "unet": float(weight)})
    pipe.set_adapters(names, weights)
    for name, weight, bw in active:
        bw = normalized(bw)
        if bw is not None:
            _scale_unet_modules(unet, name, float(weight), bw, layout, skip_blocks=dict_ok)


def _lora_layers(model: Any):
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            yield name, module


def _in_transformer_block(name: str) -> bool:
    return name.startswith(_TRANSFORMER_PARENTS) and ".attentions." in name


def _dict_form_fits(unet: Any, layout: UNetLayout) -> bool:
    """Whether diffusers' dict form works on this UNet: its lookup fails for a LoRA layer
    named outside down/mid/up blocks and for a mid block without attention."""
    if not layout.mid_attention:
        return False
    return all(_in_transformer_block(name) or len(name.split(".")) >= 4
               for name, _ in _lora_layers(unet))


def _adapter_parts(pipe: Any) -> dict[str, list[str]]:
    """adapter name -> the pipeline parts holding its layers ("unet", "text_encoder", ...)."""
    parts: dict[str, list[str]] = {}
    for part, names in pipe.get_list_adapters().items():
        for name in names:
            parts.setdefault(name, []).append(part)
    return parts


def _scale_unet_modules(unet: Any, adapter: str, strength: float, bw: BlockWeights,
                        layout: UNetLayout, skip_blocks: bool) -> None:
    for name, module in _lora_layers(unet):
        if adapter not in getattr(module, "scaling", {}):
            continue
        if skip_blocks and _in_transformer_block(name):
            continue  # set by diffusers' dict form
        module.set_scale(adapter, strength * bw.module_factor(name, layout))
