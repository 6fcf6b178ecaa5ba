"""Merge several LoRAs of any kind into one plain LoRA file (REFERENCE §1, §4 "Merging LoRAs
exactly"; issue 23 for LyCORIS kinds and block weights).

Each input is a file at a weight w_i, optionally with block weights; module m of input i adds
`s_i(m) * dW_i(m)` where s_i(m) = w_i times the session's block factor of m, and dW is the update
at strength 1 (`deltas`: `(alpha / r) * up @ down` for a plain LoRA, `lycoris.delta_weight` for
LoHa, LoKr, full-difference and DoRA). The merged file at strength 1 renders what the inputs
render loaded together at their weights and block weights.

Exact merge (plain LoRA / LoCon inputs, the default): per module the ranks are concatenated,

    down = cat_i(A_i)                          [R, in(, k, k)]      R = sum of the inputs' ranks
    up   = cat_i(s_i * (alpha_i / r_i) * B_i)  [out, R(, 1, 1)]
    alpha = R                                  (so the file's scale alpha/rank is 1)

so `up @ down` is exactly `sum_i s_i * (alpha_i / r_i) * B_i @ A_i`. A module present in only
some inputs gets only their terms. Unlike kohya's `merge_lora.py`, A and B are never added
separately (that drops the cross terms and is only an approximation). Block weights keep this
exact: they only change s_i per module.

A LoHa, LoKr, full-difference or DoRA update is not a product of two factors, so a module one of
them touches is merged as the dense sum `sum_i s_i dW_i` and re-ranked by SVD: that needs
`rank=K` (every module re-ranked), `keep=0.95`, or `lycoris_rank=K` (only those modules
re-ranked, the rest stay exact; the Mix's "Save merged LoRA…" uses LYCORIS_DEFAULT_RANK).
A DoRA update is `W_dora - W0` (the session renders strength s as W0 + s (W_dora - W0)), so a
DoRA input needs the base model (`model=`). A full-difference module's bias update (`diff_b`)
cannot be held by a LoRA file: it is left out and said so in `MergeResult.notes`.

Re-rank (`rank=K`): per module the update is decomposed by SVD and the top K singular directions
kept (all of them when the module's rank is <= K). For factors the SVD is taken through thin QR
factorizations (`up = Qu Ru`, `down^T = Qd Rd`, SVD of the small `Ru Rd^T`), which gives the same
singular values as an SVD of the dense `out x in*k*k` update at a fraction of the cost; a dense
sum is decomposed directly. Conv modules are reshaped to 2-D (`[out, in*k*k]`) first (a 3x3
kernel the LyCORIS file does not state is read from the model, or from the standard UNet of its
architecture). Each re-ranked module again has alpha = its rank (scale 1), and `sqrt(sigma)` is
put on both factors (balanced magnitudes, good for fp16). The retained share reported per module
is the share of the update's *squared* Frobenius norm kept: `sum(kept sigma^2) / sum(sigma^2)`
(1.0 for a zero update, and for a module merged exactly); the overall share is the same ratio
summed over all modules (i.e. modules weighted by their squared norm). Per input, the share is
`sum_m ||P_m s_i dW_i(m)||^2 / sum_m ||s_i dW_i(m)||^2`, P_m the projection on the kept output
directions of module m: the part of that input's update the merge keeps (the merged update is
the sum of these parts).

All arithmetic is in float32 (the SVD in float64); the output is in the inputs' common dtype, or
float32 when the inputs' dtypes differ.

The merge's metadata keeps what the inputs agree on, all their `ss_tag_frequency` folders (counts
of a folder found in several inputs added) and trigger phrases, and says which model it is for
(`ss_base_model_version`, `modelspec.architecture`, from the inputs or their architecture);
`modelspec.merged_from` lists each input as `name:weight[:lbw=BLOCKS]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.block_weights import UNetLayout
from lora_studio.core.lora.deltas import (
    MixInput,
    ModelBase,
    Term,
    arch_label,
    as_model_base,
    block_factor,
    describe_shapes,
    layer_in_shape,
    module_term,
    read_inputs,
    stored_as_conv,
)
from lora_studio.core.lora.metadata import (
    merged_tag_frequency,
    merged_trigger_phrase,
    with_architecture_keys,
)
from lora_studio.core.lora.model import ARCH_LABELS, LoraFile, LoraModule

# the rank the Mix's "Save merged LoRA…" gives the modules a LyCORIS file touches
LYCORIS_DEFAULT_RANK = 64
# metadata carried over to the merge when every input has the same value
_CARRIED_WHEN_AGREED = (
    "ss_sd_model_name", "ss_sd_model_hash", "ss_resolution", "ss_clip_skip",
    "modelspec.resolution",
)
# what the model is: carried when the inputs that state it agree (an input made for the same
# family that does not say, e.g. SD 2.x epsilon or v, does not veto it); the merge's
# architecture fills in what none states
_ARCH_KEYS = (
    "ss_base_model_version", "ss_v2", "modelspec.architecture", "modelspec.implementation",
    "modelspec.prediction_type",
)
Item = tuple  # (LoRA file or path, weight[, BlockWeights | None])


@dataclass
class MergeResult:
    """The merged LoRA; where something was re-ranked, the retained share of each module's
    squared Frobenius norm (`sum kept sigma^2 / sum sigma^2`), the same over all modules, and
    per input (in `sources` order) the share of its update the merge keeps."""

    lora: LoraFile
    retained: dict[str, float] | None = None
    overall_retained: float | None = None
    sources: list[tuple[str, float, int]] | None = None  # (name, weight, module count) per input
    input_retained: list[float] | None = None
    notes: list[str] = field(default_factory=list)  # what the merge could not keep, said plainly

    def worst_modules(self, n: int = 5) -> list[tuple[str, float]]:
        """The n modules that kept the smallest share (empty without a re-rank)."""
        if not self.retained:
            return []
        return sorted(self.retained.items(), key=lambda kv: kv[1])[:n]


def merge_loras(items: list[Item], *, rank: int | None = None, title: str | None = None,
                keep: float | None = None, model: Any = None,
                lycoris_rank: int | None = None) -> MergeResult:
    """Merge `(LoRA file or path, weight[, block weights])` items; see the module docstring.
    `rank=K` re-ranks every module to at most K by SVD; `keep=0.95` instead gives each module
    the smallest rank that keeps that share of its squared Frobenius norm; `lycoris_rank=K`
    re-ranks only the modules a LyCORIS kind touches. `model` (a spec, pipeline or
    `deltas.ModelBase`) is the base model: needed for DoRA inputs, and the UNet layout block
    weights are mapped on (default: the standard UNet of the inputs' architecture). Raises
    LoraFormatError for inputs made for different architectures, a module whose shapes differ
    between inputs, LyCORIS inputs without a rank, DoRA inputs without a model."""
    _check_settings(rank, keep, lycoris_rank)
    inputs = read_inputs(items, action="merge")
    arch = _common_arch(inputs)
    base = _model_base(model, arch, inputs)
    _check_svd_possible(inputs, rank, keep, lycoris_rank)
    merger = _Merger(inputs, base, _layout(inputs, base), _common_dtype(inputs),
                     rank=rank, keep=keep, lycoris_rank=lycoris_rank)
    for name in _module_names(inputs):
        merger.add(name)
    if not merger.modules:
        raise LoraFormatError("The merge is empty: every input has weight 0.")
    merged = LoraFile(modules=merger.modules, layout="kohya", arch=arch)
    merged.metadata = _metadata(inputs, merged, title=title, rank=rank, keep=keep,
                                lycoris_rank=lycoris_rank if merger.svd_done else None)
    result = MergeResult(lora=merged, sources=[(i.name, i.weight, len(i.network.modules))
                                               for i in inputs], notes=merger.notes())
    if merger.svd_done or rank is not None or keep is not None:
        kept = sum(k for k, _ in merger.shares.values())
        total = sum(t for _, t in merger.shares.values())
        result.retained = {n: k / t if t > 0 else 1.0 for n, (k, t) in merger.shares.items()}
        result.overall_retained = kept / total if total > 0 else 1.0
        result.input_retained = [k / t if t > 0 else 1.0 for k, t in merger.per_input]
    return result


# ----------------------------------------------------------------------------- inputs
def _check_settings(rank, keep, lycoris_rank) -> None:
    if keep is not None:
        if rank is not None:
            raise LoraFormatError("Give a rank or a share to keep, not both.")
        if not 0.0 < float(keep) <= 1.0:
            raise LoraFormatError(f"The share to keep must be in (0, 1], not {keep!r}.",
                                  "For example 0.95 keeps 95 % of each module's update.")
    for value in (rank, lycoris_rank):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise LoraFormatError(f"The merge rank must be a whole number >= 1, not {value!r}.")


def _common_arch(inputs: list[MixInput]) -> str | None:
    known = [(i.name, i.network.arch) for i in inputs if i.network.arch is not None]
    archs = {arch for _, arch in known}
    if len(archs) > 1:
        described = ", ".join(f"{name} is {ARCH_LABELS.get(arch, arch)}" for name, arch in known)
        raise LoraFormatError(f"These LoRAs were made for different architectures ({described}); "
                              "they cannot be merged.",
                              "Merge only LoRAs made for the same model family.")
    return archs.pop() if archs else None


def _model_base(model: Any, arch: str | None, inputs: list[MixInput]) -> ModelBase | None:
    """The base model where the merge needs one (DoRA weights, the UNet layout for block
    weights), checked against the inputs' architecture; else the standard UNet of that
    architecture (layer shapes). A DoRA input without a model is refused here, before any work."""
    base = as_model_base(model)
    if not any(i.dora or i.block_weights is not None for i in inputs):
        return ModelBase.of_arch(arch) if arch is not None else base
    dora = next((i.name for i in inputs if i.dora), None)
    if dora is not None and (base is None or not base.has_weights):
        raise LoraFormatError(
            f"{dora} holds DoRA modules: their update (W_dora - W0) depends on the base "
            "model's weights, so the merge needs the base model.",
            "Give the model the LoRAs are for: --model MODEL (a diffusers folder or a "
            ".safetensors checkpoint).")
    if base is not None and base.has_weights and arch is not None and base.arch != arch:
        raise LoraFormatError(f"The LoRAs were made for {arch_label(arch)}, the model is "
                              f"{arch_label(base.arch)}.",
                              f"Give a {arch_label(arch)} model.")
    return base if base is not None else (ModelBase.of_arch(arch) if arch else None)


def _check_svd_possible(inputs: list[MixInput], rank, keep, lycoris_rank) -> None:
    if rank is not None or keep is not None or lycoris_rank is not None:
        return
    for inp in inputs:
        kind = inp.not_low_rank()
        if kind is not None:
            raise LoraFormatError(
                f"{inp.name} is a LyCORIS {kind} file: its update is not a product of two "
                "factors, so it cannot be merged exactly by concatenating ranks.",
                "Re-rank the merge by SVD: add --rank 32 (or --keep 0.99); the merge reports "
                "how much of the update it keeps.")


def _layout(inputs: list[MixInput], base: ModelBase | None) -> UNetLayout | None:
    blocked = next((i.name for i in inputs if i.block_weights is not None), None)
    if blocked is None:
        return None
    if base is None:
        raise LoraFormatError(
            f"The block weights of {blocked} are mapped on the model's UNet blocks, and the "
            "files do not say which model they are for.",
            "Give the model they are for: --model MODEL.")
    return base.layout()


def _common_dtype(inputs: list[MixInput]) -> torch.dtype:
    dtypes = set()
    for inp in inputs:
        for module in inp.network.modules.values():
            if isinstance(module, LoraModule):
                dtypes.update((module.down.dtype, module.up.dtype))
            else:
                dtypes.update(t.dtype for t in module.tensors.values())
    if len(dtypes) == 1:
        dtype = dtypes.pop()
        if dtype in (torch.float32, torch.float16, torch.bfloat16):
            return dtype
    return torch.float32


def _module_names(inputs: list[MixInput]) -> list[str]:
    names: dict[str, None] = {}
    for inp in inputs:
        names.update(dict.fromkeys(inp.network.modules))
    return list(names)


# ----------------------------------------------------------------------------- the math
class _Merger:
    """Merges module by module, keeping the shares (see the module docstring)."""

    def __init__(self, inputs: list[MixInput], base: ModelBase | None,
                 layout: UNetLayout | None, dtype: torch.dtype, *, rank: int | None,
                 keep: float | None, lycoris_rank: int | None) -> None:
        self.inputs, self.base, self.layout, self.dtype = inputs, base, layout, dtype
        self.rank, self.keep, self.lycoris_rank = rank, keep, lycoris_rank
        self.modules: dict[str, LoraModule] = {}
        self.shares: dict[str, tuple[float, float]] = {}  # (kept, total) squared norm
        self.per_input = [[0.0, 0.0] for _ in inputs]  # (kept, total) of each input's update
        self.bias_left_out = [0] * len(inputs)
        self.svd_done = False

    def terms(self, name: str) -> list[Term]:
        terms = []
        for index, inp in enumerate(self.inputs):
            if name not in inp.network.modules or inp.weight == 0.0:
                continue
            scale = inp.weight * block_factor(inp.block_weights, name, self.layout)
            if scale != 0.0:  # an input at weight 0 (or a block at 0) changes nothing there
                terms.append(module_term(inp, index, name, scale, self.base))
        return terms

    def add(self, name: str) -> None:
        terms = self.terms(name)
        if not terms:
            return
        in_shape = layer_in_shape(name, terms, self.base)
        if in_shape is None or len({t.out for t in terms}) > 1 \
                or any(t.n != math.prod(in_shape) for t in terms):
            raise LoraFormatError(f"Module {name} has different shapes in the inputs "
                                  f"({describe_shapes(name, self.inputs)}).",
                                  "Merge only LoRAs made for the same base model.")
        factors = all(t.dense is None for t in terms)
        k = self.rank if self.rank is not None else (None if factors else self.lycoris_rank)
        basis = None
        if k is None and self.keep is None:
            up, down = torch.cat([t.up for t in terms], 1), torch.cat([t.down for t in terms], 0)
            kept = total = Term(-1, up=up, down=down).energy()
        else:
            up, down, kept, total, basis = _rerank(terms, k, self.keep, factors)
            self.svd_done = True
        if stored_as_conv(name, terms, in_shape, self.base):
            down, up = down.reshape(down.shape[0], *in_shape), up[:, :, None, None]
        self.modules[name] = LoraModule(down=down.to(self.dtype).contiguous(),
                                        up=up.to(self.dtype).contiguous(),
                                        alpha=float(down.shape[0]))
        self.shares[name] = (kept, total)
        for t in terms:
            energy = t.energy()
            self.per_input[t.index][1] += energy
            self.per_input[t.index][0] += energy if basis is None else t.energy(basis)
            self.bias_left_out[t.index] += t.bias is not None

    def notes(self) -> list[str]:
        return [f"{inp.name}: the bias updates (diff_b) of {count} module(s) are left out: a LoRA "
                "file cannot hold them (fuse the file into the model to keep them)."
                for inp, count in zip(self.inputs, self.bias_left_out) if count]


def _rerank(terms: list[Term], k: int | None, keep: float | None, factors: bool
            ) -> tuple[torch.Tensor, torch.Tensor, float, float, torch.Tensor]:
    """Best rank-k factors (up [out, k], down [k, n]) of the terms' sum (Eckart-Young), the
    kept and total sigma^2, and the kept output directions (orthonormal [out, k], float64).
    With `keep` instead of k: the smallest k whose sigma^2 share reaches `keep`."""
    if factors:
        u = torch.cat([t.up for t in terms], 1).double()  # [out, R]
        d = torch.cat([t.down for t in terms], 0).double()  # [R, n]
        q_u, r_u = torch.linalg.qr(u)  # [out, p], [p, R]
        q_d, r_d = torch.linalg.qr(d.T)  # [n, q], [q, R]
        core_u, sigma, core_vh = torch.linalg.svd(r_u @ r_d.T, full_matrices=False)
        left, right = q_u @ core_u, core_vh @ q_d.T
    else:
        left, sigma, right = torch.linalg.svd(sum(t.matrix() for t in terms),
                                              full_matrices=False)
    total = float((sigma**2).sum())
    if k is None:
        share = torch.cumsum(sigma**2, 0) / total if total > 0 else torch.ones_like(sigma)
        k = int((share < float(keep) - 1e-12).sum()) + 1
    k = min(k, sigma.numel())
    kept = float((sigma[:k] ** 2).sum())
    root = sigma[:k].sqrt()
    new_up = left[:, :k] * root  # [out, k]
    new_down = root[:, None] * right[:k]  # [k, n]
    return new_up.float(), new_down.float(), kept, total, left[:, :k]


# ----------------------------------------------------------------------------- metadata
def _carried(inputs: list[MixInput]) -> dict[str, str]:
    """What the merge keeps of its inputs' metadata: the keys they agree on (see
    _CARRIED_WHEN_AGREED, _ARCH_KEYS), all their tag frequencies and trigger phrases."""
    metas = [inp.network.metadata for inp in inputs]
    meta: dict[str, str] = {}
    for key in _CARRIED_WHEN_AGREED:
        values = {m.get(key) for m in metas}
        if len(values) == 1 and None not in values:
            meta[key] = values.pop()
    for key in _ARCH_KEYS:
        values = {m.get(key) for m in metas} - {None, ""}
        if len(values) == 1:
            meta[key] = values.pop()
    for key, value in (("ss_tag_frequency", merged_tag_frequency(metas)),
                       ("modelspec.trigger_phrase", merged_trigger_phrase(metas))):
        if value is not None:
            meta[key] = value
    return meta


def _how(rank: int | None, keep: float | None, lycoris_rank: int | None) -> str:
    if rank is not None:
        return f"Merged and re-ranked by SVD to at most {rank}"
    if keep is not None:
        return f"Merged and re-ranked by SVD keeping {100 * keep:g} % of each module"
    if lycoris_rank is not None:
        return ("Merged exactly (ranks concatenated), the modules of LyCORIS kinds re-ranked "
                f"by SVD to at most {lycoris_rank},")
    return "Merged exactly (ranks concatenated)"


def _metadata(inputs: list[MixInput], merged: LoraFile, *, title: str | None,
              rank: int | None, keep: float | None, lycoris_rank: int | None) -> dict[str, str]:
    meta = _carried(inputs)
    merged_from = ", ".join(inp.label for inp in inputs)
    title = title or "merge of " + " + ".join(inp.name.removesuffix(".safetensors")
                                              for inp in inputs)
    ranks = {m.rank for m in merged.modules.values()}
    alphas = {m.alpha for m in merged.modules.values()}
    meta.update({
        "ss_network_module": "networks.lora",
        # kohya writes "Dynamic" when the ranks differ between modules (resize_lora.py)
        "ss_network_dim": str(ranks.pop()) if len(ranks) == 1 else "Dynamic",
        "ss_network_alpha": str(alphas.pop()) if len(alphas) == 1 else "Dynamic",
        "ss_output_name": title,
        "ss_training_comment": f"{_how(rank, keep, lycoris_rank)} from {merged_from}",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.title": title,
        "modelspec.merged_from": merged_from,
    })
    return with_architecture_keys(meta, merged.arch)
