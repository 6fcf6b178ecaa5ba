"""What a LoRA file holds, for people (`format_inspection`) and for scripts (`to_dict`)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lora_studio.core.lora.hashing import sshs_model_hash
from lora_studio.core.lora.lycoris import LycorisFile, module_groups
from lora_studio.core.lora.lycoris_read import network_from_state_dict
from lora_studio.core.lora.model import ARCH_LABELS
from lora_studio.core.lora.sft import load_tensors

_SHOWN_METADATA = ("ss_output_name", "modelspec.title", "ss_base_model_version", "ss_sd_model_name",
                   "ss_network_dim", "ss_network_alpha", "ss_steps", "ss_num_epochs",
                   "ss_learning_rate", "modelspec.trigger_phrase", "modelspec.date")


@dataclass
class LoraInspection:
    path: str
    file_size: int
    layout: str
    arch: str | None
    # "LoRA" | "LoCon" (has conv layers with kernels larger than 1x1); a LyCORIS file: the kinds
    # of its modules, most common first ("LoHa", "LoKr", "DoRA", "full-difference", ...)
    kind: str
    module_count: int
    unet_modules: int
    text_encoder_modules: int
    text_encoder_2_modules: int
    ranks: list[int]
    alphas: list[float]
    dtypes: list[str]
    short_hash: str
    sshs_model_hash: str
    metadata: dict[str, str] = field(default_factory=dict)
    top_tags: list[tuple[str, int]] = field(default_factory=list)
    # LyCORIS files only: per (component, kind) the module count, ranks, alphas and LoKr
    # factor shapes (`lycoris.module_groups`)
    groups: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["top_tags"] = [[tag, count] for tag, count in self.top_tags]
        return data


def _top_tags(metadata: dict[str, str], limit: int = 10) -> list[tuple[str, int]]:
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency", "{}"))
        counts: Counter[str] = Counter()
        for tags in frequency.values():
            counts.update({str(t): int(n) for t, n in tags.items()})
        return counts.most_common(limit)
    except (ValueError, TypeError, AttributeError):
        return []


def inspect_lora(path: str | os.PathLike[str]) -> LoraInspection:
    """Read `path` (refusing what LoRA Studio cannot generate with, like `read_network`) and
    summarize it."""
    path = Path(path)
    tensors, header = load_tensors(path)
    metadata = {k: v for k, v in header.metadata.items() if k != "format"}
    lora = network_from_state_dict(tensors, metadata, source=path.name)
    names = list(lora.modules)
    data_hash = sshs_model_hash(path)
    if isinstance(lora, LycorisFile):
        kind, groups = lora.kind, module_groups(lora)
    else:
        locon = any(m.down.dim() == 4 and tuple(m.down.shape[2:]) != (1, 1)
                    for m in lora.modules.values())
        kind, groups = ("LoCon" if locon else "LoRA"), []
    return LoraInspection(
        path=str(path),
        file_size=header.file_size,
        layout=lora.layout,
        arch=lora.arch,
        kind=kind,
        module_count=len(names),
        unet_modules=sum(n.startswith("unet.") for n in names),
        text_encoder_modules=sum(n.startswith("text_encoder.") for n in names),
        text_encoder_2_modules=sum(n.startswith("text_encoder_2.") for n in names),
        ranks=sorted(lora.ranks),
        alphas=sorted(lora.alphas),
        dtypes=sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()}),
        short_hash=data_hash[:12],
        sshs_model_hash=data_hash,
        metadata=dict(sorted(metadata.items())),
        top_tags=_top_tags(metadata),
        groups=groups,
    )


def _size_text(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _numbers(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


_COMPONENT_LABELS = {"unet": "UNet", "text_encoder": "text encoder",
                     "text_encoder_2": "text encoder 2"}


def _group_lines(groups: list[dict]) -> list[str]:
    """"  groups:     UNet: 24 LoKr, rank 4, alpha 1, factors 4x4 ⊗ 8x8" per module group."""
    lines = []
    for index, group in enumerate(groups):
        text = f"{_COMPONENT_LABELS.get(group['component'], group['component'])}: " \
               f"{group['modules']} {group['kind']}"
        if group["ranks"]:
            text += f", rank {_numbers(group['ranks'])}, alpha {_numbers(group['alphas'])}"
        factors = group["lokr_factors"]
        if factors:
            text += ", factors " + ", ".join(factors[:3])
            text += f" (+{len(factors) - 3} more)" if len(factors) > 3 else ""
        lines.append(("  groups:     " if index == 0 else "              ") + text)
    return lines


def format_inspection(info: LoraInspection) -> str:
    lines = [
        f"{Path(info.path).name}  ({_size_text(info.file_size)}, short hash {info.short_hash})",
        f"  kind:       {info.kind}, {info.layout} layout",
        f"  made for:   {ARCH_LABELS.get(info.arch or '', 'unknown (not stated in the file)')}",
        f"  modules:    {info.module_count} (UNet {info.unet_modules}, text encoder "
        f"{info.text_encoder_modules}"
        + (f", text encoder 2 {info.text_encoder_2_modules}" if info.text_encoder_2_modules else "")
        + ")",
        f"  rank:       {_numbers(info.ranks) or 'none (full matrices)'}",
        f"  alpha:      {_numbers(info.alphas) or 'none (scale 1)'}",
        f"  precision:  {', '.join(info.dtypes)}",
    ]
    lines += _group_lines(info.groups)
    shown = [(k, info.metadata[k]) for k in _SHOWN_METADATA if info.metadata.get(k)]
    if shown:
        lines.append("  training:")
        lines += [f"    {k}: {v}" for k, v in shown]
    if info.top_tags:
        lines.append("  top tags:   " + ", ".join(f"{t} ({n})" for t, n in info.top_tags))
    hidden = len(info.metadata) - len(shown)
    if hidden > 0:
        lines.append(f"  (+{hidden} more metadata entries; --json shows all)")
    return "\n".join(lines)
