"""Read LyCORIS files (kohya / LyCORIS key naming, and DoRA in diffusers / PEFT files) into a
`lycoris.LycorisFile`; plain LoRA files go on to `formats.lora_from_state_dict` as before.

kohya / LyCORIS naming: `<lora_unet_|lora_te_|lora_te1_|lora_te2_><flattened module path>.<factor>`
with the factors of `lycoris.FACTORS`, an optional `.alpha` and `.dora_scale`. diffusers / PEFT
naming: the plain layout (`unet.<path>.lora_A.weight`, ...) plus `<path>.lora_magnitude_vector`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora import layouts
from lora_studio.core.lora.formats import (
    detect_arch,
    is_lycoris,
    lora_from_state_dict,
    refuse_other_kinds,
)
from lora_studio.core.lora.lycoris import FACTORS, LycorisFile, NetworkModule
from lora_studio.core.lora.model import LoraFile
from lora_studio.core.lora.sft import load_tensors

_KIND_OF = {suffix: kind for kind, suffixes in FACTORS.items() for suffix in suffixes}
_MAGNITUDE = re.compile(r"\.lora_magnitude_vector(?:\.[A-Za-z0-9_-]+)?(?:\.weight)?$")
_FIX_DAMAGED = "Download or export it again: the file is damaged."


class BadNetwork(Exception):
    """A module whose tensors cannot be the kind they claim (the message says why)."""


def read_network(path: str | os.PathLike[str]) -> LoraFile | LycorisFile:
    """Read a LoRA file of any kind LoRA Studio generates with: a plain LoRA / LoCon
    (`formats.read_lora`'s LoraFile) or a LyCORIS kind (a LycorisFile)."""
    path = Path(path)
    tensors, header = load_tensors(path)
    metadata = {k: v for k, v in header.metadata.items() if k != "format"}
    return network_from_state_dict(tensors, metadata, source=path.name)


def network_from_state_dict(tensors: dict[str, torch.Tensor],
                            metadata: dict[str, str] | None = None, *,
                            source: str = "This LoRA") -> LoraFile | LycorisFile:
    metadata = dict(metadata or {})
    if not is_lycoris(tensors.keys()):
        return lora_from_state_dict(tensors, metadata, source=source)
    refuse_other_kinds(tensors.keys(), source, lycoris_ok=True)
    try:
        if any(layouts.is_kohya_key(k) for k in tensors):
            modules, sgm = _kohya_modules(tensors)
            layout = "kohya"
        else:
            modules, layout = _peft_modules(tensors, metadata)
            sgm = False
    except (BadNetwork, layouts.BadModule) as exc:
        raise LoraFormatError(f"{source}: {exc}.", _FIX_DAMAGED) from None
    except layouts.UnknownKeys as exc:
        raise LoraFormatError(f"{source} has keys that are not LoRA or LyCORIS weights LoRA "
                              f"Studio knows: {exc.listing()}.",
                              "It may be another kind of network or a damaged export; export "
                              "it again from the tool that made it.") from None
    for name, module in modules.items():
        _check_values(name, module, source)
    return LycorisFile(modules=modules, metadata=metadata, layout=layout,
                       arch=detect_arch(modules, metadata, sgm_names=sgm))


def _kohya_modules(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, NetworkModule], bool]:
    return layouts.kohya_modules(
        tensors, lambda suffix: suffix in _KIND_OF or suffix in ("alpha", "dora_scale"), _module)


def _module(stem: str, group: dict[str, torch.Tensor]) -> NetworkModule:
    kinds = sorted({_KIND_OF[s] for s in group if s in _KIND_OF})
    if not kinds:
        raise BadNetwork(f"the layer {stem} has no factors, only {', '.join(sorted(group))}")
    if len(kinds) > 1:
        raise BadNetwork(f"the layer {stem} mixes {' and '.join(kinds)} factors")
    kind = kinds[0]
    missing = _missing(kind, group)
    if missing:
        label = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr", "full": "full-difference"}[kind]
        raise BadNetwork(f"the {label} layer {stem} has no {missing} (a half-written export?)")
    if kind == "full" and "dora_scale" in group:
        raise BadNetwork(f"the layer {stem} has a dora_scale on a full difference")
    module = NetworkModule(kind, {s: t for s, t in group.items() if s in _KIND_OF},
                           _alpha(group.get("alpha"), stem), group.get("dora_scale"))
    try:
        _ = module.shape  # the factors multiply (computed on the meta device: no data)
    except RuntimeError:
        shapes = ", ".join(f"{s} {tuple(t.shape)}" for s, t in sorted(module.tensors.items()))
        raise BadNetwork(f"the factors of {stem} do not fit together: {shapes}") from None
    return module


def _missing(kind: str, group: dict) -> str | None:
    def need(*names: str) -> str | None:
        return next((n for n in names if n not in group), None)

    if kind == "lora":
        return need("lora_down.weight", "lora_up.weight")
    if kind == "full":
        return need("diff")
    if kind == "loha":
        absent = need("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        if absent is None and ("hada_t1" in group) != ("hada_t2" in group):
            absent = "hada_t2" if "hada_t1" in group else "hada_t1"
        return absent
    for w in ("lokr_w1", "lokr_w2"):  # LoKr: each of W1, W2 whole or as two factors
        if w not in group and need(f"{w}_a", f"{w}_b"):
            return need(f"{w}_a", f"{w}_b") if f"{w}_a" in group or f"{w}_b" in group else w
    if "lokr_t2" in group and "lokr_w2_a" not in group:
        return "lokr_w2_a / lokr_w2_b beside lokr_t2"
    return None


def _alpha(tensor: torch.Tensor | None, stem: str) -> float | None:
    if tensor is None:
        return None
    if tensor.numel() != 1:
        raise BadNetwork(f"the alpha {stem}.alpha holds {tensor.numel()} values; an alpha is "
                         "one number")
    return float(tensor.float().item())


def _peft_modules(tensors: dict[str, torch.Tensor], metadata: dict[str, str]
                  ) -> tuple[dict[str, NetworkModule], str]:
    """A diffusers / PEFT file with DoRA magnitudes (`lora_magnitude_vector`)."""
    magnitudes: dict[str, tuple[str, torch.Tensor]] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        found = _MAGNITUDE.search(key)
        if found:
            magnitudes[key[: found.start()]] = (key, tensor)
        else:
            rest[key] = tensor
    plain, layout = layouts.modules_from_peft(rest, metadata)
    modules = {name: NetworkModule("lora", {"lora_down.weight": m.down, "lora_up.weight": m.up},
                                   m.alpha) for name, m in plain.items()}
    for stem, (key, tensor) in magnitudes.items():
        name = layouts.peft_module_name(stem)
        if name is None:
            raise layouts.UnknownKeys([key])
        if name not in modules:
            raise BadNetwork(f"the DoRA magnitude {key} has no lora_A / lora_B factors")
        modules[name].dora_scale, modules[name].dora_on_out = tensor, True
    return modules, layout


def _check_values(name: str, module: NetworkModule, source: str) -> None:
    """Refuse tensors that are not floating point, or would render NaN / black images."""
    for part, values in module.tensor_list():
        if not values.is_floating_point():
            raise LoraFormatError(f"{source}: module {name} holds {values.dtype} values in its "
                                  f"{part}; LoRA weights are floating point.", _FIX_DAMAGED)
        if not bool(torch.isfinite(values).all()):
            what = "NaN" if bool(torch.isnan(values).any()) else "infinite values"
            raise LoraFormatError(f"{source}: module {name} has {what} in its {part}; it would "
                                  "render black or noise.",
                                  "The file is damaged, or its training diverged: use an earlier "
                                  "checkpoint of it.")
