"""LyCORIS kinds (LoHa, LoKr, DoRA, full-difference): their in-memory form and their updates
(`lycoris_read` reads the files).

The formulas are LyCORIS's own (`lycoris/modules/`), as ComfyUI applies them
(`comfy/weight_adapter/`, REFERENCE §12). Each module's update at strength 1, `delta_weight`:

- LoRA / LoCon (`lora_down` / `lora_up`, here only when the file also holds another kind or
  DoRA): `(alpha / r) * up @ down`, r = `lora_down.shape[0]`.
- LoHa: `(alpha / r) * (w1_a @ w1_b) * (w2_a @ w2_b)` (element-wise product), r =
  `hada_w1_b.shape[0]`. With `hada_t1` / `hada_t2` (Tucker, 3x3 convs) each factor is
  `einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a)`.
- LoKr: `scale * kron(W1, W2)`, W1 = `lokr_w1` or `lokr_w1_a @ lokr_w1_b`, W2 = `lokr_w2`,
  `lokr_w2_a @ lokr_w2_b` or the Tucker form with `lokr_t2`. scale = alpha / r where r is the
  rank of a factored W (`lokr_w2_b.shape[0]`, else `lokr_w1_b.shape[0]`), and 1 when both are
  full matrices. A 4-D W2 (a conv kernel) gets W1 broadcast over the kernel.
- full-difference: `diff` (and `diff_b` added to the bias).
- A module without an `alpha` tensor has scale 1 (alpha = r).

DoRA (`dora_scale`, or PEFT's `lora_magnitude_vector` in diffusers / PEFT files): the patched
weight `V = W0 + dW` is re-normalised to the stored magnitude, `W_dora = m * V / ||V||`, the norm
taken per output channel when the magnitude has one value per output channel (LyCORIS's default
`wd_on_out`, and always PEFT's) and per input channel otherwise. Strength s interpolates
linearly, `W = W0 + s * (W_dora - W0)`, as ComfyUI and AUTOMATIC1111 do, so
`delta_weight(module, W0) = W_dora - W0` is the update at strength 1 and a slider scales it.
(ComfyUI takes the output-channel norm of W0 instead of V; LyCORIS, PEFT and the DoRA paper
use V, and so does this module.)

`delta_weight` is the one place the dense update of a LyCORIS module is made: the session's
patched layers, and merge / fuse / resize (through `lora.deltas`) use it; convert takes plain
LoRA files only (`formats.read_lora` refuses LyCORIS kinds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lora_studio.core.lora.model import split_canonical

# the factor suffixes of each kind, as LyCORIS (and kohya, for LoRA) write them
FACTORS = {
    "lora": ("lora_down.weight", "lora_up.weight"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),
    "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
             "lokr_t2"),
    "full": ("diff", "diff_b"),
}
_LABELS = {"loha": "LoHa", "lokr": "LoKr", "full": "full-difference"}
_EPS = torch.finfo(torch.float32).eps


@dataclass
class NetworkModule:
    """One layer's update in a LyCORIS file: its kind, its factors by suffix, the file's alpha
    (None: none stored) and an optional DoRA magnitude."""

    kind: str  # "lora" | "loha" | "lokr" | "full"
    tensors: dict[str, torch.Tensor]
    alpha: float | None = None
    dora_scale: torch.Tensor | None = None
    dora_on_out: bool | None = None  # True: PEFT's magnitude; None: decided by its shape

    @property
    def rank(self) -> int | None:
        t = self.tensors
        if self.kind == "lora":
            return int(t["lora_down.weight"].shape[0])
        if self.kind == "loha":
            return int(t["hada_w1_b"].shape[0])
        if self.kind == "lokr":
            factored = t.get("lokr_w2_b", t.get("lokr_w1_b"))
            return None if factored is None else int(factored.shape[0])
        return None

    @property
    def scale(self) -> float:
        """The factor on the product of the factors at strength 1."""
        rank = self.rank
        if self.alpha is None or rank is None:
            return 1.0
        return self.alpha / rank

    @property
    def alpha_value(self) -> float | None:
        """The alpha that `scale` means (the rank where the file stores none); None for a kind
        without a rank."""
        rank = self.rank
        if rank is None:
            return None
        return float(rank) if self.alpha is None else float(self.alpha)

    @property
    def label(self) -> str:
        """"LoHa", "LoKr", "full-difference", "LoRA" / "LoCon"; with DoRA "DoRA" or
        "LoHa + DoRA"."""
        if self.kind == "lora":
            down = self.tensors["lora_down.weight"]
            base = "LoCon" if down.dim() == 4 and tuple(down.shape[2:]) != (1, 1) else "LoRA"
            return "DoRA" if self.dora_scale is not None else base
        label = _LABELS[self.kind]
        return label + " + DoRA" if self.dora_scale is not None else label

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the update the factors make: [out, in(, k, k)], or [out, in*k*k] where
        the file does not say the kernel (a conv layer's update is reshaped to its weight)."""
        return tuple(_product(self, torch.device("meta")).shape)

    @property
    def in_features(self) -> int:
        return int(self.shape[1])

    def lokr_factors(self) -> str | None:
        """"4x4 ⊗ 8x8" (W1 ⊗ W2 shapes, 3x3 kernels shown on W2) for a LoKr module."""
        if self.kind != "lokr":
            return None
        w1, w2 = _lokr_parts(self, torch.device("meta"))
        return "x".join(map(str, w1.shape)) + " ⊗ " + "x".join(map(str, w2.shape))

    def tensor_list(self) -> list[tuple[str, torch.Tensor]]:
        extra = [("alpha", torch.tensor(self.alpha))] if self.alpha is not None else []
        if self.dora_scale is not None:
            extra.append(("dora_scale", self.dora_scale))
        return list(self.tensors.items()) + extra


@dataclass
class LycorisFile:
    """A LyCORIS file: canonical module name -> NetworkModule, plus its string metadata."""

    modules: dict[str, NetworkModule] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    layout: str = "kohya"
    arch: str | None = None

    @property
    def kind(self) -> str:
        """The kinds of its modules, most common first ("LoHa", "LoKr, LoRA", "DoRA")."""
        counts: dict[str, int] = {}
        for module in self.modules.values():
            counts[module.label] = counts.get(module.label, 0) + 1
        return ", ".join(sorted(counts, key=lambda k: -counts[k]))

    @property
    def ranks(self) -> set[int]:
        return {m.rank for m in self.modules.values() if m.rank is not None}

    @property
    def alphas(self) -> set[float]:
        return {m.alpha_value for m in self.modules.values() if m.alpha_value is not None}


# ----------------------------------------------------------------------------- the formulas
def _f32(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.to(device=device, dtype=torch.float32)


def _tucker(t: torch.Tensor, w_a: torch.Tensor, w_b: torch.Tensor) -> torch.Tensor:
    """t [r, r, k, k], w_a [r, out], w_b [r, in] -> [out, in, k, k]."""
    return torch.einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a)


def _lokr_parts(module: NetworkModule, device) -> tuple[torch.Tensor, torch.Tensor]:
    t = {k: _f32(v, device) for k, v in module.tensors.items()}
    w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
    elif "lokr_t2" in t:
        w2 = _tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
    else:
        w2 = t["lokr_w2_a"] @ t["lokr_w2_b"].flatten(1)
    return w1, w2


def _product(module: NetworkModule, device) -> torch.Tensor:
    """The product of the factors, without the scale, in float32 on `device`."""
    t = {k: _f32(v, device) for k, v in module.tensors.items()}
    if module.kind == "lora":
        down, up = t["lora_down.weight"], t["lora_up.weight"]
        product = up.flatten(1) @ down.flatten(1)
        return product.reshape(up.shape[0], *down.shape[1:])
    if module.kind == "loha":
        if "hada_t1" in t:
            return (_tucker(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"])
                    * _tucker(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"]))
        return ((t["hada_w1_a"] @ t["hada_w1_b"].flatten(1))
                * (t["hada_w2_a"] @ t["hada_w2_b"].flatten(1)))
    if module.kind == "lokr":
        w1, w2 = _lokr_parts(module, device)
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return torch.kron(w1.contiguous(), w2.contiguous())  # kron views its inputs
    return t["diff"]


def delta_weight(module: NetworkModule, base_weight: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """The update `module` adds to its layer's weight at strength 1, in float32.

    Shaped like `base_weight` when given, else `module.shape`. A DoRA module needs the layer's
    base weight W0 (its update is `W_dora - W0`, see the module docstring)."""
    device = base_weight.device if base_weight is not None else torch.device("cpu")
    delta = _product(module, device) * module.scale
    if base_weight is None:
        if module.dora_scale is not None:
            raise ValueError("a DoRA module's update depends on the base weight; pass it")
        return delta
    delta = delta.reshape(base_weight.shape)
    if module.dora_scale is None:
        return delta
    base = _f32(base_weight, device)
    merged = base + delta
    magnitude = _f32(module.dora_scale, device)
    if dora_on_output(module, base_weight.shape):
        norm = merged.flatten(1).norm(dim=1).reshape(-1, *[1] * (merged.dim() - 1))
    else:
        norm = merged.transpose(0, 1).flatten(1).norm(dim=1)
        norm = norm.reshape(1, -1, *[1] * (merged.dim() - 2))
    return merged * (magnitude.reshape(norm.shape) / (norm + _EPS)) - base


def delta_bias(module: NetworkModule) -> torch.Tensor | None:
    """What a full-difference module adds to the layer's bias (`diff_b`), in float32."""
    diff_b = module.tensors.get("diff_b")
    return None if diff_b is None else diff_b.float().flatten()


def dora_on_output(module: NetworkModule, weight_shape) -> bool:
    """Whether the DoRA magnitude is per output channel (else per input channel)."""
    if module.dora_on_out is not None:
        return module.dora_on_out
    scale = module.dora_scale
    return scale.dim() > 0 and scale.shape[0] == weight_shape[0] \
        and scale.numel() == weight_shape[0]


def shape_problem(module: NetworkModule, weight_shape) -> str | None:
    """None when the update fits a layer weight of `weight_shape`, else what does not fit."""
    weight_shape = tuple(weight_shape)
    have = module.shape
    ok = have[0] == weight_shape[0] and math.prod(have) == math.prod(weight_shape)
    if ok and len(have) == 4:
        ok = have == weight_shape if len(weight_shape) == 4 else have[2:] == (1, 1)
    if not ok:
        return f"has {_dims(weight_shape)} weights, the update is {_dims(have)}"
    if module.dora_scale is not None:
        wanted = {weight_shape[0]} if module.dora_on_out else {weight_shape[0], weight_shape[1]}
        if module.dora_scale.numel() not in wanted:
            return (f"has {_dims(weight_shape)} weights, the DoRA magnitude holds "
                    f"{module.dora_scale.numel()} values")
    bias = module.tensors.get("diff_b")
    if bias is not None and bias.numel() != weight_shape[0]:
        return f"has {weight_shape[0]} outputs, diff_b holds {bias.numel()} values"
    return None


def _dims(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


# ----------------------------------------------------------------------------- inspect
def module_groups(network: LycorisFile) -> list[dict]:
    """One entry per (component, kind): how many modules, their ranks, alphas and LoKr
    factor shapes, for `lora-studio inspect`."""
    groups: dict[tuple[str, str], list[NetworkModule]] = {}
    for name, module in network.modules.items():
        groups.setdefault((split_canonical(name)[0], module.label), []).append(module)
    out = []
    for (component, label), modules in sorted(groups.items()):
        factors = sorted({m.lokr_factors() for m in modules if m.kind == "lokr"})
        out.append({"component": component, "kind": label, "modules": len(modules),
                    "ranks": sorted({m.rank for m in modules if m.rank is not None}),
                    "alphas": sorted({m.alpha_value for m in modules
                                      if m.alpha_value is not None}),
                    "lokr_factors": factors})
    return out
