"""LyCORIS files for the tests (issue 23): LoHa, LoKr, DoRA and full-difference modules written
key by key as LyCORIS writes them (kohya naming; DoRA also in diffusers / PEFT naming), with the
update each module makes computed here from the raw tensors.

The reference formulas below are LyCORIS's (`lycoris/modules/{loha,lokr,locon,full}.py`, as
ComfyUI's `comfy/weight_adapter/` applies them), written out independently of lora_studio: the
low-rank products as sums of rank-1 outer products, the Tucker cores as explicit sums over their
ranks, the Kronecker product block by block, and DoRA's norms channel by channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

STRENGTH = 0.8


# ----------------------------------------------------------------------------- reference math
def low_rank(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [out, r] times b [r, n], as a sum of r outer products."""
    return sum(torch.outer(a[:, j], b[j]) for j in range(a.shape[1]))


def tucker(core: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """out[p, q, k, l] = sum_ij core[i, j, k, l] * wa[i, p] * wb[j, q]."""
    out = torch.zeros(wa.shape[1], wb.shape[1], *core.shape[2:])
    for i in range(core.shape[0]):
        for j in range(core.shape[1]):
            out += torch.outer(wa[i], wb[j])[:, :, None, None] * core[i, j][None, None]
    return out


def kron_blocks(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The Kronecker product assembled block by block (a 4-D w2: w1 applied per kernel tap)."""
    a, c = w1.shape
    b, d = w2.shape[:2]
    out = torch.zeros(a * b, c * d, *w2.shape[2:])
    for p in range(a):
        for s in range(c):
            out[p * b:(p + 1) * b, s * d:(s + 1) * d] = w1[p, s] * w2
    return out


def ref_loha(t: dict, alpha: float | None, shape) -> torch.Tensor:
    rank = t["hada_w1_b"].shape[0]
    scale = 1.0 if alpha is None else alpha / rank
    if "hada_t1" in t:
        m1 = tucker(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"])
        m2 = tucker(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
    else:
        m1 = low_rank(t["hada_w1_a"], t["hada_w1_b"])
        m2 = low_rank(t["hada_w2_a"], t["hada_w2_b"])
    return (m1 * m2 * scale).reshape(shape)


def ref_lokr(t: dict, alpha: float | None, shape) -> torch.Tensor:
    w1 = t["lokr_w1"] if "lokr_w1" in t else low_rank(t["lokr_w1_a"], t["lokr_w1_b"])
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
    elif "lokr_t2" in t:
        w2 = tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
    else:
        w2 = low_rank(t["lokr_w2_a"], t["lokr_w2_b"])
    factored = t.get("lokr_w2_b", t.get("lokr_w1_b"))
    scale = 1.0 if alpha is None or factored is None else alpha / factored.shape[0]
    return (kron_blocks(w1, w2) * scale).reshape(shape)


def ref_dora(delta: torch.Tensor, w0: torch.Tensor, magnitude: torch.Tensor,
             on_out: bool) -> torch.Tensor:
    """W_dora - W0, W_dora = m * (W0 + dW) / ||W0 + dW|| per output (or input) channel."""
    v = w0.float() + delta
    m = magnitude.flatten()
    out = torch.empty_like(v)
    if on_out:
        for o in range(v.shape[0]):
            out[o] = v[o] * m[o] / v[o].norm()
    else:
        for i in range(v.shape[1]):
            out[:, i] = v[:, i] * m[i] / v[:, i].norm()
    return out - w0.float()


# ----------------------------------------------------------------------------- module makers
@dataclass
class Made:
    tensors: dict[str, torch.Tensor]  # by suffix: "hada_w1_a", "alpha", "dora_scale", ...
    delta: torch.Tensor  # the update at strength 1, shaped like the weight
    bias: torch.Tensor | None = None  # what diff_b adds to the bias


def _split(n: int) -> int:
    """The smaller factor of n closest to its square root."""
    return max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)


def _target(weight: torch.Tensor) -> float:
    """An update about half the layer's weights at STRENGTH: visible, never noise."""
    return 0.5 * float(weight.float().std()) / STRENGTH


def loha(rank: int = 4, alpha: float | None = 2.0, use_tucker: bool = False):
    def make(weight, bias, g) -> Made:
        out, fan_in = weight.shape[0], weight[0].numel()
        if use_tucker:
            _, inp, kh, kw = weight.shape
            t = {"hada_t1": torch.randn(rank, rank, kh, kw, generator=g),
                 "hada_w1_a": torch.randn(rank, out, generator=g),
                 "hada_w1_b": torch.randn(rank, inp, generator=g),
                 "hada_t2": torch.randn(rank, rank, kh, kw, generator=g),
                 "hada_w2_a": torch.randn(rank, out, generator=g),
                 "hada_w2_b": torch.randn(rank, inp, generator=g)}
        else:
            t = {"hada_w1_a": torch.randn(out, rank, generator=g),
                 "hada_w1_b": torch.randn(rank, fan_in, generator=g),
                 "hada_w2_a": torch.randn(out, rank, generator=g),
                 "hada_w2_b": torch.randn(rank, fan_in, generator=g)}
        factor = _target(weight) / float(ref_loha(t, alpha, weight.shape).std())
        t["hada_w1_a"] = t["hada_w1_a"] * factor
        return _made(t, alpha, ref_loha(t, alpha, weight.shape))
    return make


def lokr(w1: str = "full", w2: str = "full", rank: int = 2, alpha: float | None = 1.0):
    """w1: "full" | "factored"; w2: "full" | "factored" | "tucker" (3x3 convs)."""
    def make(weight, bias, g) -> Made:
        out, inp, *kernel = weight.shape
        a, c = _split(out), _split(inp)
        b, d = out // a, inp // c
        t = ({"lokr_w1": torch.randn(a, c, generator=g)} if w1 == "full" else
             {"lokr_w1_a": torch.randn(a, rank, generator=g),
              "lokr_w1_b": torch.randn(rank, c, generator=g)})
        if w2 == "full":
            t["lokr_w2"] = torch.randn(b, d, *kernel, generator=g)
        elif w2 == "tucker":
            t.update(lokr_t2=torch.randn(rank, rank, *kernel, generator=g),
                     lokr_w2_a=torch.randn(rank, b, generator=g),
                     lokr_w2_b=torch.randn(rank, d, generator=g))
        else:  # a conv's kernel goes into w2_b's columns
            t.update(lokr_w2_a=torch.randn(b, rank, generator=g),
                     lokr_w2_b=torch.randn(rank, d * math.prod(kernel), generator=g))
        first = "lokr_w1" if w1 == "full" else "lokr_w1_a"
        t[first] = t[first] * (_target(weight) / float(ref_lokr(t, alpha, weight.shape).std()))
        return _made(t, alpha, ref_lokr(t, alpha, weight.shape))
    return make


def dora(axis: str = "out", rank: int = 4, alpha: float | None = 2.0):
    """A LoRA / LoCon module with a DoRA magnitude per output ("out", LyCORIS's default) or input
    ("in") channel, or PEFT's `lora_magnitude_vector` ("peft": [out], [1, out, 1, 1] on convs)."""
    def make(weight, bias, g) -> Made:
        out, inp, *kernel = weight.shape
        down = torch.randn(rank, inp, *kernel, generator=g)
        up = torch.randn(out, rank, *([1, 1] if kernel else []), generator=g)
        scale = 1.0 if alpha is None else alpha / rank
        lora_delta = scale * low_rank(up.flatten(1), down.flatten(1)).reshape(weight.shape)
        up = up * (_target(weight) / float(lora_delta.std()))
        lora_delta = scale * low_rank(up.flatten(1), down.flatten(1)).reshape(weight.shape)
        merged = weight.float() + lora_delta
        on_out = axis in ("out", "peft")
        if on_out:
            norms = torch.stack([merged[o].norm() for o in range(out)])
        else:
            norms = torch.stack([merged[:, i].norm() for i in range(inp)])
        magnitude = norms * (0.6 + 0.8 * torch.rand(norms.shape, generator=g))
        rest = [1] * len(kernel)
        shapes = {"out": [out, 1, *rest], "in": [1, inp, *rest],
                  "peft": [1, out, 1, 1] if kernel else [out]}
        t = {"lora_down.weight": down, "lora_up.weight": up,
             "dora_scale": magnitude.reshape(shapes[axis])}
        return _made(t, alpha, ref_dora(lora_delta, weight, magnitude, on_out))
    return make


def plain(rank: int = 2, alpha: float | None = 1.0):
    """A plain LoRA / LoCon module (`lora_down` / `lora_up`, kohya naming): a file of only these
    is a plain LoRA file (a PEFT adapter in the session)."""
    def make(weight, bias, g) -> Made:
        out, inp, *kernel = weight.shape
        down = torch.randn(rank, inp, *kernel, generator=g)
        up = torch.randn(out, rank, *([1, 1] if kernel else []), generator=g)
        scale = 1.0 if alpha is None else alpha / rank
        delta = scale * low_rank(up.flatten(1), down.flatten(1)).reshape(weight.shape)
        up = up * (_target(weight) / float(delta.std()))
        delta = scale * low_rank(up.flatten(1), down.flatten(1)).reshape(weight.shape)
        return _made({"lora_down.weight": down, "lora_up.weight": up}, alpha, delta)
    return make


def diff(with_bias: bool = True):
    def make(weight, bias, g) -> Made:
        t = {"diff": torch.randn(weight.shape, generator=g) * _target(weight)}
        made = Made(t, t["diff"].clone())
        if with_bias:
            assert bias is not None, "diff_b only on a layer with a bias"
            t["diff_b"] = torch.randn(weight.shape[0], generator=g) * 0.5
            made.bias = t["diff_b"].clone()
        return made
    return make


def _made(t: dict, alpha: float | None, delta: torch.Tensor) -> Made:
    if alpha is not None:
        t["alpha"] = torch.tensor(float(alpha))
    return Made(t, delta)


# ----------------------------------------------------------------------------- files
@dataclass(frozen=True)
class Target:
    """One layer a file patches: its key stem in the file, where it is, how it is made."""

    stem: str
    component: str  # the pipeline part holding the layer
    path: str  # the layer's name in that part
    make: object  # a maker above: (weight, bias, generator) -> Made


def unet(path: str, make) -> Target:
    return Target("lora_unet_" + path.replace(".", "_"), "unet", path, make)


def sgm(stem: str, path: str, make) -> Target:
    """A kohya SDXL UNet key (original SGM block names) and the diffusers layer it means."""
    return Target("lora_unet_" + stem, "unet", path, make)


def te(prefix: str, component: str, path: str, make) -> Target:
    """`te("lora_te_", "text_encoder", "encoder.layers.0.self_attn.q_proj", ...)`."""
    flat = path.removeprefix("text_model.").replace(".", "_")
    return Target(f"{prefix}text_model_{flat}", component, path, make)


def peft_unet(path: str, make) -> Target:
    return Target(f"unet.{path}", "unet", path, make)


_PEFT_SUFFIXES = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight",
                  "dora_scale": "lora_magnitude_vector"}


def layer(pipe, target: Target) -> torch.nn.Module:
    module = getattr(pipe, target.component).get_submodule(target.path)
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def write_network(path: Path, targets, pipe, seed: int, *, naming: str = "kohya",
                  metadata: dict[str, str] | None = None) -> dict[Target, Made]:
    """Write `targets` into `path` ("kohya" or "peft" naming); returns what each one makes."""
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    made: dict[Target, Made] = {}
    for target in targets:
        module = layer(pipe, target)
        bias = None if module.bias is None else module.bias.detach()
        made[target] = target.make(module.weight.detach(), bias, g)
        for suffix, tensor in made[target].tensors.items():
            if naming == "peft":  # no alphas there (alpha = rank): make these with alpha=None
                assert suffix != "alpha", "a PEFT file's modules are made with alpha=None"
                suffix = _PEFT_SUFFIXES[suffix]
            tensors[f"{target.stem}.{suffix}"] = tensor.contiguous()
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})
    return made


def patch_base(pipe, updates: dict[Target, Made], strength: float) -> dict:
    """W += strength * dW (and b += strength * db) on the base weights; returns the originals."""
    saved = {}
    with torch.no_grad():
        for target, made in updates.items():
            module = layer(pipe, target)
            saved[target] = (module.weight.detach().clone(),
                             None if module.bias is None else module.bias.detach().clone())
            module.weight += (strength * made.delta).to(module.weight.dtype)
            if made.bias is not None:
                module.bias += (strength * made.bias).to(module.bias.dtype)
    return saved


def restore_base(pipe, saved: dict) -> None:
    with torch.no_grad():
        for target, (weight, bias) in saved.items():
            module = layer(pipe, target)
            module.weight.copy_(weight)
            if bias is not None:
                module.bias.copy_(bias)
