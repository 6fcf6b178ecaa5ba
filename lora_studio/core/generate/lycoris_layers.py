"""LyCORIS networks (LoHa, LoKr, DoRA, full-difference) on a live pipeline, beside PEFT's LoRAs.

PEFT cannot hold these kinds next to plain LoRA adapters with per-adapter strengths, so each
layer a network patches (a Linear or Conv2d) gets a `PatchedLayer` as its forward: the layer
runs with

    W = W0 + sum over its networks of  scale_n * delta_weight(module_n, W0)
    b = b0 + sum of  scale_n * diff_b_n            (full-difference modules)

which is what the base with its weights patched by the LyCORIS formulas (`core.lora.lycoris`)
computes. W0 is the layer's own weight, never changed. The patched W is made once (float32,
then the layer's dtype) and kept until a scale changes, so a render costs what the base costs
and a slider move only records a number: the next forward makes W again from the factors held
in memory (no file is read). That costs one copy of each patched layer's weight while a
network is on, as a patched-weights tool (ComfyUI) keeps one copy of the originals.

A layer PEFT wraps later (a plain LoRA on the same layer) calls this forward as its base
layer's, so the kinds stack. `NetworkStack.apply` gives each network its strength, or per-block
strengths (the same factors as `adapters.AdapterScales`), and its text-encoder strength to its
text-encoder layers; a network not in the active list is off (scale 0: the layer runs its own
weights).

torch is imported only when a network is used: the session (and so this module) is imported on
the app's start-up path.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lora_studio.core.lora.block_weights import BlockWeights, UNetLayout, normalized

if TYPE_CHECKING:
    import torch

    from lora_studio.core.lora.lycoris import NetworkModule

_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pipeline -> NetworkStack


class PatchedLayer:
    """The forward of one Linear / Conv2d carrying LyCORIS updates (see the module docstring)."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.layer = layer
        self.updates: dict[str, NetworkModule] = {}
        self.scales: dict[str, float] = {}
        self._cache: tuple | None = None  # (key, weight, bias)

    @classmethod
    def of(cls, layer: torch.nn.Module) -> PatchedLayer:
        """The layer's PatchedLayer, installed as its forward on first use."""
        current = layer.__dict__.get("forward")
        if isinstance(current, PatchedLayer):
            return current
        patched = cls(layer)
        layer.forward = patched  # an instance attribute: nn.Module.__call__ runs it
        return patched

    def add(self, adapter: str, module: NetworkModule, scale: float = 1.0) -> None:
        from lora_studio.core.lora.lycoris import NetworkModule

        weight = self.layer.weight
        on_device = {k: v.to(weight.device) for k, v in module.tensors.items()}
        dora = None if module.dora_scale is None else module.dora_scale.to(weight.device)
        self.updates[adapter] = NetworkModule(module.kind, on_device, module.alpha, dora,
                                              module.dora_on_out)
        self.scales[adapter] = float(scale)

    def remove(self, adapter: str) -> None:
        self.updates.pop(adapter, None)
        self.scales.pop(adapter, None)
        self._cache = None
        if not self.updates and self.layer.__dict__.get("forward") is self:
            del self.layer.forward  # back to the class's own forward

    def __call__(self, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        import torch.nn.functional as F

        weight, bias = self.effective()
        if hasattr(self.layer, "_conv_forward"):  # a Conv2d
            return self.layer._conv_forward(input, weight, bias)
        return F.linear(input, weight, bias)

    def effective(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias the layer runs with at the current scales."""
        import torch

        from lora_studio.core.lora.lycoris import delta_bias, delta_weight

        layer = self.layer
        active = tuple((a, s) for a, s in self.scales.items() if s != 0.0)
        if not active:
            self._cache = None
            return layer.weight, layer.bias
        w0 = layer.weight
        key = (active, w0.data_ptr(), w0._version, w0.device, w0.dtype)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        self._cache = None  # the old copy goes before the new one is made
        with torch.no_grad():
            base = w0.detach()
            weight = base.float().clone()
            bias = None if layer.bias is None else layer.bias.detach().float().clone()
            for adapter, scale in active:
                module = self.updates[adapter]
                weight += scale * delta_weight(module, base)
                extra = delta_bias(module)
                if extra is not None:
                    extra = scale * extra.to(weight.device)
                    bias = extra if bias is None else bias + extra
            weight = weight.to(w0.dtype)
            bias = None if bias is None else bias.to(w0.dtype)
        self._cache = (key, weight, bias)
        return weight, bias


class NetworkStack:
    """The LyCORIS networks loaded into one pipeline: name -> [(part, module name, layer)]."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = weakref.ref(pipe)
        self.networks: dict[str, list[tuple[str, str, PatchedLayer]]] = {}
        self._applied: dict[str, tuple[float, BlockWeights | None]] = {}
        self._layout: UNetLayout | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.networks

    def attach(self, adapter: str,
               entries: Sequence[tuple[str, str, torch.nn.Module, NetworkModule]]) -> None:
        """Patch each (part, module name, layer, module) in `entries`, at scale 1."""
        layers = []
        for part, name, layer, module in entries:
            patched = PatchedLayer.of(layer)
            patched.add(adapter, module)
            layers.append((part, name, patched))
        self.networks[adapter] = layers
        self._applied[adapter] = (1.0, None, 1.0)

    def detach(self, adapter: str) -> None:
        for _, _, patched in self.networks.pop(adapter, ()):
            patched.remove(adapter)
        self._applied.pop(adapter, None)

    def apply(self, active: Sequence[tuple]) -> None:
        """Set every network's scales: those in `active` — (name, strength, block weights[,
        text-encoder strength]) — at their strength (and block weights; the text-encoder
        strength, default `strength`, on text-encoder layers), the others off. A network whose
        setting did not change is not touched."""
        wanted = {}
        for name, w, bw, *te in active:
            if name in self.networks:
                te_weight = te[0] if te and te[0] is not None else w
                wanted[name] = (float(w), normalized(bw), float(te_weight))
        for name, layers in self.networks.items():
            setting = wanted.get(name, (0.0, None, 0.0))
            if self._applied.get(name) == setting:
                continue
            strength, bw, te = setting
            for part, module_name, patched in layers:
                on = strength if part == "unet" else te
                patched.scales[name] = on * self._factor(bw, part, module_name)
            self._applied[name] = setting

    def _factor(self, bw: BlockWeights | None, part: str, module_name: str) -> float:
        return 1.0 if bw is None else bw.part_factor(part, module_name, self._unet_layout)

    def _unet_layout(self) -> UNetLayout:
        if self._layout is None:
            self._layout = UNetLayout.of(self._pipe().unet)
        return self._layout


# ----------------------------------------------------------------------------- per pipeline
def stack_of(pipe: Any, *, create: bool = False) -> NetworkStack | None:
    stack = _STACKS.get(pipe)
    if stack is None and create:
        stack = _STACKS[pipe] = NetworkStack(pipe)
    return stack


def network_names(pipe: Any) -> set[str]:
    """The LyCORIS networks loaded in `pipe`."""
    stack = stack_of(pipe)
    return set(stack.networks) if stack else set()


def attach_network(pipe: Any, adapter: str,
                   entries: Sequence[tuple[str, str, torch.nn.Module, NetworkModule]]) -> None:
    stack_of(pipe, create=True).attach(adapter, entries)


def remove_network(pipe: Any, adapter: str) -> bool:
    """Take a LyCORIS network off `pipe`; False when it holds none of that name."""
    stack = stack_of(pipe)
    if stack is None or adapter not in stack:
        return False
    stack.detach(adapter)
    return True


def apply_network_scales(pipe: Any, active: Sequence[tuple[str, float, Any]]) -> list:
    """Give the pipeline's LyCORIS networks their settings from `active` (the others off);
    returns the rest of `active`: the PEFT adapters."""
    stack = stack_of(pipe)
    if stack is None or not stack.networks:
        return list(active)
    stack.apply(active)
    return [a for a in active if a[0] not in stack]
