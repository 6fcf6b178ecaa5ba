"""Merge several LoRAs into one file, exactly (REFERENCE §1, §4 "Merging LoRAs exactly").

Exact merge (the default): per module the ranks are concatenated,

    down = cat_i(A_i)                      [R, in(, k, k)]      R = sum of the inputs' ranks
    up   = cat_i(w_i * (alpha_i / r_i) * B_i)  [out, R(, 1, 1)]
    alpha = R                              (so the file's scale alpha/rank is 1)

so `up @ down` is exactly `sum_i w_i * (alpha_i / r_i) * B_i @ A_i`: the merged file at strength 1
renders what the inputs render loaded together at strengths w_i. A module present in only some
inputs gets only their terms (a module of one input is kept, its weight and scale folded into
`up`). Unlike kohya's `merge_lora.py`, A and B are never added separately (that drops the cross
terms and is only an approximation).

Re-rank (`rank=K`): per module the dense update is decomposed by SVD and the top K singular
directions kept (all of them when the module's rank is <= K). The SVD is taken through thin QR
factorizations of the factors (`up = Qu Ru`, `down^T = Qd Rd`, SVD of the small `Ru Rd^T`), which
gives the same singular values as an SVD of the dense `out x in*k*k` update at a fraction of the
cost. Conv modules are reshaped to 2-D (`[out, in*k*k]`) first. Each re-ranked module again has
alpha = its rank (scale 1), and `sqrt(sigma)` is put on both factors (balanced magnitudes, good
for fp16). The retained share reported per module is the share of the update's *squared*
Frobenius norm kept: `sum(kept sigma^2) / sum(sigma^2)` (1.0 for a zero update); the overall share
is the same ratio summed over all modules (i.e. modules weighted by their squared norm).

All arithmetic is in float32 (the SVD in float64); the output is in the inputs' common dtype, or
float32 when the inputs' dtypes differ.

The merge's metadata keeps what the inputs agree on, all their `ss_tag_frequency` folders (counts
of a folder found in several inputs added) and trigger phrases, and says which model it is for
(`ss_base_model_version`, `modelspec.architecture`, from the inputs or their architecture).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.metadata import (
    merged_tag_frequency,
    merged_trigger_phrase,
    with_architecture_keys,
)
from lora_studio.core.lora.model import ARCH_LABELS, LoraFile, LoraModule

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


@dataclass
class MergeResult:
    """The merged LoRA; with a re-rank, the retained share of each module's squared Frobenius
    norm (`sum kept sigma^2 / sum sigma^2`) and the same over all modules."""

    lora: LoraFile
    retained: dict[str, float] | None = None
    overall_retained: float | None = None
    sources: list[tuple[str, float, int]] | None = None  # (name, weight, module count) per input

    def worst_modules(self, n: int = 5) -> list[tuple[str, float]]:
        """The n modules that kept the smallest share (empty without a re-rank)."""
        if not self.retained:
            return []
        return sorted(self.retained.items(), key=lambda kv: kv[1])[:n]


def merge_loras(items: list[tuple[LoraFile | str | os.PathLike[str], float]], *,
                rank: int | None = None, title: str | None = None,
                keep: float | None = None) -> MergeResult:
    """Merge `(LoRA file or path, weight)` pairs; see the module docstring for the math.
    `rank=K` re-ranks every module to at most K by SVD; `keep=0.95` instead gives each module
    the smallest rank that keeps that share of its squared Frobenius norm. Raises
    LoraFormatError for inputs made for different architectures or a module whose shapes
    differ between inputs."""
    if not items:
        raise LoraFormatError("Nothing to merge: give at least one LoRA.")
    if keep is not None:
        if rank is not None:
            raise LoraFormatError("Give a rank or a share to keep, not both.")
        if not 0.0 < float(keep) <= 1.0:
            raise LoraFormatError(f"The share to keep must be in (0, 1], not {keep!r}.",
                                  "For example 0.95 keeps 95 % of each module's update.")
    if rank is not None and (isinstance(rank, bool) or int(rank) != rank or rank < 1):
        raise LoraFormatError(f"The merge rank must be a whole number >= 1, not {rank!r}.")
    loras: list[tuple[str, LoraFile, float]] = []
    for index, (source, weight) in enumerate(items):
        weight = float(weight)
        if not math.isfinite(weight):
            raise LoraFormatError(f"Weight {weight} for input {index + 1} is not a number.")
        lora, name = _load(source, index)
        loras.append((name, lora, weight))
    arch = _common_arch(loras)
    out_dtype = _common_dtype(lora for _, lora, _ in loras)

    names: list[str] = []
    for _, lora, _ in loras:
        names.extend(n for n in lora.modules if n not in names)
    modules: dict[str, LoraModule] = {}
    reranked = rank is not None or keep is not None
    retained: dict[str, float] | None = {} if reranked else None
    kept_energy = total_energy = 0.0
    for name in names:
        parts = [(lora.modules[name], weight) for _, lora, weight in loras
                 if name in lora.modules and weight != 0.0]
        if not parts:  # only in inputs at weight 0: it would change nothing
            continue
        down, up = _concat(name, parts, loras)
        if reranked:
            down, up, kept, total = _rerank(down, up, int(rank) if rank else None, keep)
            retained[name] = kept / total if total > 0 else 1.0
            kept_energy += kept
            total_energy += total
        modules[name] = LoraModule(down=down.to(out_dtype).contiguous(),
                                   up=up.to(out_dtype).contiguous(), alpha=float(down.shape[0]))
    if not modules:
        raise LoraFormatError("The merge is empty: every input has weight 0.")
    overall = None
    if reranked:
        overall = kept_energy / total_energy if total_energy > 0 else 1.0
    merged = LoraFile(modules=modules, layout="kohya", arch=arch)
    merged.metadata = _metadata(loras, merged, title=title, rank=rank)
    sources = [(name, weight, len(lora.modules)) for name, lora, weight in loras]
    return MergeResult(lora=merged, retained=retained, overall_retained=overall, sources=sources)


# ----------------------------------------------------------------------------- inputs
def _load(source, index: int) -> tuple[LoraFile, str]:
    if isinstance(source, LoraFile):
        name = (source.metadata.get("ss_output_name") or source.metadata.get("modelspec.title")
                or f"lora{index + 1}")
        return source, name
    from lora_studio.core.lora.formats import read_lora

    path = Path(source)
    if not path.is_file():
        raise LoraFormatError(f"{path} does not exist or is not a file.",
                              "Check the path of each LoRA to merge.")
    return read_lora(path), path.name


def _common_arch(loras: list[tuple[str, LoraFile, float]]) -> str | None:
    known = [(name, lora.arch) for name, lora, _ in loras if lora.arch is not None]
    archs = {arch for _, arch in known}
    if len(archs) > 1:
        described = ", ".join(f"{name} is {ARCH_LABELS.get(arch, arch)}" for name, arch in known)
        raise LoraFormatError(f"These LoRAs were made for different architectures ({described}); "
                              "they cannot be merged.",
                              "Merge only LoRAs made for the same model family.")
    return archs.pop() if archs else None


def _common_dtype(loras) -> torch.dtype:
    dtypes = {t.dtype for lora in loras for m in lora.modules.values() for t in (m.down, m.up)}
    if len(dtypes) == 1:
        dtype = dtypes.pop()
        if dtype in (torch.float32, torch.float16, torch.bfloat16):
            return dtype
    return torch.float32


# ----------------------------------------------------------------------------- the math
def _concat(name: str, parts: list[tuple[LoraModule, float]],
            loras: list[tuple[str, LoraFile, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """cat(A_i) and cat(w_i * alpha_i/r_i * B_i) in float32, shaped as the inputs' factors
    (a 1x1 conv stored 2-D in one file and 4-D in another comes out 4-D)."""
    in_shapes = {tuple(m.down.shape[1:]) if m.down.dim() == 4 and m.down.shape[2:] != (1, 1)
                 else (m.down.shape[1], 1, 1) for m, _ in parts}
    outs = {m.up.shape[0] for m, _ in parts}
    if len(in_shapes) > 1 or len(outs) > 1:
        shapes = "; ".join(f"{src}: down {tuple(lora.modules[name].down.shape)} up "
                           f"{tuple(lora.modules[name].up.shape)}"
                           for src, lora, _ in loras if name in lora.modules)
        raise LoraFormatError(f"Module {name} has different shapes in the inputs ({shapes}).",
                              "Merge only LoRAs made for the same base model.")
    downs = [m.down.float().flatten(1) for m, _ in parts]
    ups = [m.up.float().flatten(1) * (w * m.scale) for m, w in parts]
    down, up = torch.cat(downs, 0), torch.cat(ups, 1)
    four_d = any(m.down.dim() == 4 for m, _ in parts)
    if four_d:
        down = down.reshape(down.shape[0], *next(iter(in_shapes)))
        up = up[:, :, None, None]
    return down, up


def _rerank(down: torch.Tensor, up: torch.Tensor, k: int | None, keep: float | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Best rank-k factors of up @ down (Eckart-Young), plus (kept sigma^2, total sigma^2).
    With `keep` instead of k: the smallest k whose sigma^2 share reaches `keep`."""
    d = down.double().flatten(1)  # [R, n]
    u = up.double().flatten(1)  # [out, R]
    q_u, r_u = torch.linalg.qr(u)  # [out, p], [p, R]
    q_d, r_d = torch.linalg.qr(d.T)  # [n, q], [q, R]
    core_u, sigma, core_vh = torch.linalg.svd(r_u @ r_d.T, full_matrices=False)
    total = float((sigma**2).sum())
    if k is None:
        share = torch.cumsum(sigma**2, 0) / total if total > 0 else torch.ones_like(sigma)
        k = int((share < float(keep) - 1e-12).sum()) + 1
    k = min(k, sigma.numel())
    kept = float((sigma[:k] ** 2).sum())
    root = sigma[:k].sqrt()
    new_up = (q_u @ core_u[:, :k]) * root  # [out, k]
    new_down = root[:, None] * (core_vh[:k] @ q_d.T)  # [k, n]
    if down.dim() == 4:
        new_down = new_down.reshape(k, *down.shape[1:])
        new_up = new_up[:, :, None, None]
    return new_down.float(), new_up.float(), kept, total


# ----------------------------------------------------------------------------- metadata
def _fmt_weight(weight: float) -> str:
    return f"{weight:g}"


def _carried(loras: list[tuple[str, LoraFile, float]]) -> dict[str, str]:
    """What the merge keeps of its inputs' metadata: the keys they agree on (see
    _CARRIED_WHEN_AGREED, _ARCH_KEYS), all their tag frequencies and trigger phrases."""
    meta: dict[str, str] = {}
    for key in _CARRIED_WHEN_AGREED:
        values = {lora.metadata.get(key) for _, lora, _ in loras}
        if len(values) == 1 and None not in values:
            meta[key] = values.pop()
    for key in _ARCH_KEYS:
        values = {lora.metadata.get(key) for _, lora, _ in loras} - {None, ""}
        if len(values) == 1:
            meta[key] = values.pop()
    inputs = [lora.metadata for _, lora, _ in loras]
    for key, value in (("ss_tag_frequency", merged_tag_frequency(inputs)),
                       ("modelspec.trigger_phrase", merged_trigger_phrase(inputs))):
        if value is not None:
            meta[key] = value
    return meta


def _metadata(loras: list[tuple[str, LoraFile, float]], merged: LoraFile, *,
              title: str | None, rank: int | None) -> dict[str, str]:
    meta = _carried(loras)
    merged_from = ", ".join(f"{name}:{_fmt_weight(w)}" for name, _, w in loras)
    title = title or "merge of " + " + ".join(name.removesuffix(".safetensors")
                                              for name, _, _ in loras)
    ranks = {m.rank for m in merged.modules.values()}
    alphas = {m.alpha for m in merged.modules.values()}
    how = "Merged exactly (ranks concatenated)"
    if rank is not None:
        how = f"Merged and re-ranked by SVD to at most {rank}"
    meta.update({
        "ss_network_module": "networks.lora",
        # kohya writes "Dynamic" when the ranks differ between modules (resize_lora.py)
        "ss_network_dim": str(ranks.pop()) if len(ranks) == 1 else "Dynamic",
        "ss_network_alpha": str(alphas.pop()) if len(alphas) == 1 else "Dynamic",
        "ss_output_name": title,
        "ss_training_comment": f"{how} from {merged_from}",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.title": title,
        "modelspec.merged_from": merged_from,
    })
    return with_architecture_keys(meta, merged.arch)
