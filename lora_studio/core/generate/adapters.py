"""Active adapters and their strengths on a pipeline: plain weights or per-block weights.

A LoRA without block weights gets its float through `set_adapters`; one whose text encoders
take another weight than its UNet (`<lora:name:te:unet>`) gets diffusers' per-component dict
`{"text_encoder": te, "unet": w}`. One with block weights gets diffusers' dict form
(`BlockWeights.to_diffusers`), which sets the text encoder and every transformer block.
diffusers cannot name the rest of the UNet in that form: LoCon conv layers in resnets and
samplers would be left at scale 1.0 whatever the strength (and layers outside down / mid / up,
e.g. `conv_in`, make its lookup fail), so a second pass sets those modules from
`BlockWeights.module_factor`. When diffusers' dict form cannot be used at all on this UNet
the pass sets every module of that adapter itself.

`AdapterScales` keeps a pipeline's adapters at what a session asks for with the least work: a
slider move re-scales only the moved adapter's own layers (PEFT's `set_scale`, the same factors
and the same float arithmetic as the full pass, so the result is bit-identical), while switching
adapters on or off, adding or removing one goes through `set_adapter_weights`.

LyCORIS networks (LoHa, LoKr, DoRA, full-difference) are not PEFT adapters: they sit in
`generate.lycoris_layers` under the same kind of name, and `AdapterScales.apply` hands them
their strengths there before the PEFT adapters get theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lora_studio.core.generate.lycoris_layers import (
    apply_network_scales,
    network_names,
    remove_network,
)
from lora_studio.core.lora.block_weights import BlockWeights, UNetLayout, normalized

# (adapter name, strength, block weights or None[, text-encoder strength or None: strength])
ActiveAdapter = tuple  # (str, float, BlockWeights | None) or (..., float | None)
_TRANSFORMER_PARENTS = ("down_blocks.", "up_blocks.", "mid_block.")


def normalized_adapters(active: Sequence[ActiveAdapter]) -> list[tuple]:
    """`active` as (name, strength, block weights or None, text-encoder strength) each."""
    out = []
    for name, weight, bw, *te in active:
        te_weight = te[0] if te and te[0] is not None else weight
        out.append((name, float(weight), normalized(bw), float(te_weight)))
    return out


def set_adapter_weights(pipe: Any, active: Sequence[ActiveAdapter]) -> None:
    """Activate exactly `active` on `pipe` at their strengths (block weights and text-encoder
    strengths where given)."""
    active = normalized_adapters(active)
    names = [name for name, *_ in active]
    if all(bw is None and te == w for _, w, bw, te in active):
        pipe.set_adapters(names, [w for _, w, _, _ in active])
        return
    unet = pipe.unet
    layout = UNetLayout.of(unet)
    dict_ok = _dict_form_fits(unet, layout)
    parts = _adapter_parts(pipe)
    weights: list[Any] = []
    for name, weight, bw, te in active:
        encoders = tuple(p for p in parts.get(name, ()) if p.startswith("text_encoder"))
        if bw is None and te == weight:
            weights.append(weight)
        elif bw is None:
            weights.append({**{e: te for e in encoders},
                            **({"unet": weight} if "unet" in parts.get(name, ()) else {})})
        elif dict_ok:
            weights.append({**bw.to_diffusers(weight, layout, encoders),
                            **{e: te * bw.text_encoder for e in encoders}})
        else:
            weights.append({**{e: te * bw.text_encoder for e in encoders}, "unet": weight})
    pipe.set_adapters(names, weights)
    for name, weight, bw, _ in active:
        if bw is not None:
            _scale_unet_modules(unet, name, weight, bw, layout, skip_blocks=dict_ok)


def pipe_adapters(pipe: Any) -> set[str]:
    """The names of the adapters loaded in the pipeline (any part), LyCORIS networks too."""
    return _peft_adapters(pipe) | network_names(pipe)


def _peft_adapters(pipe: Any) -> set[str]:
    try:
        return {name for names in pipe.get_list_adapters().values() for name in names}
    except Exception:  # no PEFT layers yet
        return set()


def delete_adapter(pipe: Any, name: str) -> None:
    if remove_network(pipe, name):
        return
    if name in _peft_adapters(pipe):
        pipe.delete_adapters([name])


def lora_layers(model: Any):
    """(module name, peft LoRA layer) of every LoRA-wrapped layer in `model`."""
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
               for name, _ in lora_layers(unet))


def _adapter_parts(pipe: Any) -> dict[str, list[str]]:
    """adapter name -> the pipeline parts holding its layers ("unet", "text_encoder", ...)."""
    parts: dict[str, list[str]] = {}
    for part, names in pipe.get_list_adapters().items():
        for name in names:
            parts.setdefault(name, []).append(part)
    return parts


def _scale_unet_modules(unet: Any, adapter: str, strength: float, bw: BlockWeights,
                        layout: UNetLayout, skip_blocks: bool) -> None:
    for name, module in lora_layers(unet):
        if adapter not in getattr(module, "scaling", {}):
            continue
        if skip_blocks and _in_transformer_block(name):
            continue  # set by diffusers' dict form
        module.set_scale(adapter, strength * bw.module_factor(name, layout))


class AdapterScales:
    """The active adapters and per-layer scales of one pipeline, changed by the smallest step.

    `apply(active)`: when the active adapter names (in order) are those applied last, only the
    adapters whose strength or block weights changed are re-scaled, each through the list of its
    own LoRA layers (one walk of the model, kept until `reset`), with the factor
    `set_adapter_weights` would give it: `strength` in the UNet and the text-encoder strength
    (default: `strength`) in the text encoders; with block weights, `strength *
    module_factor(module)` in the UNet and `te strength * text_encoder` in the text encoders.
    Anything else (an adapter switched on or off, reordered, none active, or after `reset`) goes
    through `set_adapter_weights`, which walks every LoRA layer of the pipeline.
    Not thread-safe: the caller holds the pipeline's lock."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._applied: list[ActiveAdapter] | None = None  # None: unknown, apply in full
        self._layers: dict[str, list[tuple[str, str, Any]]] | None = None
        self._layout: UNetLayout | None = None

    def reset(self) -> None:
        """Adapters were loaded or deleted: forget what is applied and the layer lists."""
        self._applied = None
        self._layers = None

    def apply(self, active: Sequence[ActiveAdapter]) -> None:
        """Make the pipeline's active adapters and scales exactly `active`."""
        wanted = normalized_adapters(active)
        wanted = apply_network_scales(self.pipe, wanted)  # the rest are PEFT adapters
        applied, self._applied = self._applied, None  # unknown until this call succeeds
        if not wanted:
            if _peft_adapters(self.pipe):  # with none loaded there is nothing to switch off
                self.pipe.disable_lora()
        elif applied and [a[0] for a in applied] == [a[0] for a in wanted] \
                and self._index() is not None:
            for new, old in zip(wanted, applied):
                if new != old:
                    self._rescale(*new)
        else:
            self.pipe.enable_lora()
            set_adapter_weights(self.pipe, wanted)
            self._index()  # walked once per set of loaded adapters, so slider moves are cheap
        self._applied = wanted

    def _rescale(self, adapter: str, strength: float, bw: BlockWeights | None,
                 te: float) -> None:
        layers = self._index() or {}
        for part, module_name, layer in layers.get(adapter, ()):
            on = strength if part == "unet" else te  # else: a text encoder
            layer.set_scale(adapter, on if bw is None
                            else on * bw.part_factor(part, module_name, self._layout))

    def _index(self) -> dict[str, list[tuple[str, str, Any]]] | None:
        """adapter -> [(pipeline part, module name, LoRA layer)]; None when some adapter sits
        in a part other than the UNet and text encoders (the full pass handles those)."""
        if self._layers is None:
            layers: dict[str, list[tuple[str, str, Any]]] = {}
            for part in self.pipe.get_list_adapters():
                if part != "unet" and not part.startswith("text_encoder"):
                    return None
                for module_name, layer in lora_layers(getattr(self.pipe, part)):
                    for adapter in getattr(layer, "scaling", {}):
                        layers.setdefault(adapter, []).append((part, module_name, layer))
            self._layout = UNetLayout.of(self.pipe.unet)
            self._layers = layers
        return self._layers
