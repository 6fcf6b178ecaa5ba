"""State dicts <-> LoraFile for the kohya and diffusers/PEFT key layouts (no file I/O here).

Unknown keys are collected, not guessed at: the caller turns them into one clear error.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import torch

from lora_studio.core.lora.model import LoraFile, LoraModule, split_canonical
from lora_studio.core.lora.naming import KOHYA_PREFIXES, canonical_to_kohya, kohya_to_canonical

M = TypeVar("M")  # the module type a reader builds (LoraModule, lycoris.NetworkModule)

ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers' key for the LoraConfig JSON
_UNET_ROOTS = ("down_blocks", "up_blocks", "mid_block", "conv_in", "conv_out", "time_embedding",
               "add_embedding", "conv_norm_out")
_TEXT_ROOTS = ("text_model", "encoder", "embeddings", "final_layer_norm")


class UnknownKeys(Exception):
    def __init__(self, keys: list[str]) -> None:
        super().__init__(", ".join(keys[:5]))
        self.keys = keys

    def listing(self) -> str:
        """The first five keys, and how many more there are."""
        more = f" (and {len(self.keys) - 5} more)" if len(self.keys) > 5 else ""
        return ", ".join(self.keys[:5]) + more


class BadModule(Exception):
    """A module whose tensors cannot be a plain LoRA's (the message says why)."""


def _alpha_value(tensor: torch.Tensor, key: str) -> float:
    if tensor.numel() != 1:
        raise BadModule(f"the alpha {key} holds {tensor.numel()} values; an alpha is one number")
    return float(tensor.float().item())


def _add_module(modules: dict[str, LoraModule], name: str, module: LoraModule, key: str,
                keys: dict[str, str]) -> None:
    """modules[name] = module, refusing a second key for the same layer (never drop one)."""
    if name in modules:
        raise BadModule(f"two keys name the same layer {name}: {keys[name]} and {key}")
    modules[name], keys[name] = module, key


def _need_both(name: str, group: dict, down: str, up: str, labels: tuple[str, str] | None = None
               ) -> None:
    missing = [label for part, label in zip((down, up), labels or (down, up)) if part not in group]
    if missing:
        raise BadModule(f"the layer {name} has no {missing[0]} factor (a half-written export?)")


def is_kohya_key(key: str) -> bool:
    return key.startswith(tuple(KOHYA_PREFIXES))


# ----------------------------------------------------------------------------- kohya
def kohya_modules(tensors: dict[str, torch.Tensor], accepts: Callable[[str], bool],
                  build: Callable[[str, dict[str, torch.Tensor]], M]) -> tuple[dict[str, M], bool]:
    """Group kohya keys `<stem>.<suffix>` by layer (suffixes `accepts` allows), name each layer
    canonically and `build(stem, {suffix: tensor})` its module: (canonical name -> module, True
    if the UNet used SGM names). Unknown keys raise UnknownKeys, two stems naming one layer
    BadModule. Plain LoRA files and LyCORIS files are both read through here."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in tensors.items():
        stem, _, suffix = key.partition(".")
        if accepts(suffix):
            groups.setdefault(stem, {})[suffix] = tensor
        else:
            unknown.append(key)
    modules: dict[str, M] = {}
    seen: dict[str, str] = {}
    sgm = False
    for stem, group in groups.items():
        converted = kohya_to_canonical(stem)
        if converted is None:
            unknown.extend(f"{stem}.{s}" for s in group)
            continue
        name, used_sgm = converted
        sgm |= used_sgm
        _add_module(modules, name, build(stem, group), stem, seen)
    if unknown:
        raise UnknownKeys(sorted(unknown))
    return modules, sgm


_PLAIN_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")


def modules_from_kohya(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, LoraModule], bool]:
    """(canonical modules, True if the UNet used SGM names, i.e. an SDXL kohya file)."""
    return kohya_modules(tensors, _PLAIN_SUFFIXES.__contains__, _plain_module)


def _plain_module(stem: str, group: dict[str, torch.Tensor]) -> LoraModule:
    _need_both(stem, group, "lora_down.weight", "lora_up.weight")
    down = group["lora_down.weight"]
    alpha = (_alpha_value(group["alpha"], f"{stem}.alpha") if "alpha" in group
             else float(down.shape[0]))
    return LoraModule(down=down, up=group["lora_up.weight"], alpha=alpha)


def _alpha_tensor(alpha: float, dtype: torch.dtype) -> torch.Tensor:
    """The alpha in the save precision when that is exact, else float32 (never a rounded alpha)."""
    candidate = torch.tensor(alpha, dtype=dtype)
    if float(candidate.float()) == alpha:
        return candidate
    return torch.tensor(alpha, dtype=torch.float32)


def kohya_state_dict(lora: LoraFile, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    sdxl = lora.arch == "sdxl" or any(k.startswith("text_encoder_2.") for k in lora.modules)
    out: dict[str, torch.Tensor] = {}
    for name, module in lora.modules.items():
        stem = canonical_to_kohya(name, sdxl=sdxl)
        down = module.down.to(dtype) if dtype else module.down
        up = module.up.to(dtype) if dtype else module.up
        out[f"{stem}.lora_down.weight"] = down.detach().contiguous().cpu()
        out[f"{stem}.lora_up.weight"] = up.detach().contiguous().cpu()
        out[f"{stem}.alpha"] = _alpha_tensor(module.alpha, down.dtype)
    return out


# ----------------------------------------------------------------------------- diffusers / PEFT
_OLD_ATTN = re.compile(r"\.(?:processor\.)?(to_q|to_k|to_v|to_out)_lora\.")
_TE_OLD_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
_SUFFIXES = [
    (re.compile(r"^(.*)\.lora_A(?:\.[A-Za-z0-9_-]+)?\.weight$"), "down"),
    (re.compile(r"^(.*)\.lora_B(?:\.[A-Za-z0-9_-]+)?\.weight$"), "up"),
    (re.compile(r"^(.*)\.lora\.down\.weight$"), "down"),
    (re.compile(r"^(.*)\.lora\.up\.weight$"), "up"),
    (re.compile(r"^(.*)\.alpha$"), "alpha"),
]


def _split_peft_key(key: str) -> tuple[str, str, str, bool] | None:
    """-> (component, module path as in the file, part, had a component prefix) or None."""
    k = key.removeprefix("base_model.model.")
    component, _, rest = k.partition(".")
    prefixed = component in ("unet", "text_encoder", "text_encoder_2")
    if prefixed:
        k = rest.removeprefix("base_model.model.")
    k = k.replace(".lora_linear_layer.", ".lora.")
    old = _OLD_ATTN.search(k)
    if old:
        new = old.group(1)
        new = new + ".0" if new == "to_out" else new
        k = k[: old.start()] + "." + new + ".lora." + k[old.end():]
    for pattern, part in _SUFFIXES:  # noqa: B007 (part is read after the break)
        m = pattern.match(k)
        if m:
            path = m.group(1).replace(".processor.", ".")
            break
    else:
        return None
    if not prefixed:
        root = path.split(".")[0]
        component = "unet" if root in _UNET_ROOTS else "text_encoder" if root in _TEXT_ROOTS else ""
        if not component:
            return None
    if component.startswith("text_encoder"):
        m = re.search(r"self_attn\.(to_q|to_k|to_v|to_out)(\.0)?$", path)
        if m:
            path = path[: m.start()] + "self_attn." + _TE_OLD_NAMES[m.group(1)]
    return component, path, part, prefixed


def peft_module_name(stem: str) -> str | None:
    """The canonical name of the module a diffusers / PEFT key names without its factor suffix
    (`unet.<path>`, `text_encoder.text_model.<path>`, `base_model.model.<path>`); None when it
    names no known component."""
    split = _split_peft_key(stem + ".lora_A.weight")
    if split is None:
        return None
    component, path, _, _ = split
    return f"{component}.{path if component == 'unet' else path.removeprefix('text_model.')}"


def adapter_configs(metadata: dict[str, str]) -> dict[str, dict]:
    """Per-component LoraConfig dicts from diffusers' `lora_adapter_metadata` JSON."""
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    if not isinstance(flat, dict):
        return {}
    configs: dict[str, dict] = {}
    for key, value in flat.items():
        component, _, field = key.partition(".")
        if component in ("unet", "text_encoder", "text_encoder_2") and field:
            configs.setdefault(component, {})[field] = value
    if not configs and ("r" in flat or "lora_alpha" in flat):
        configs = {c: flat for c in ("unet", "text_encoder", "text_encoder_2")}
    return configs


def _pattern_value(patterns: dict, path: str):
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return None


def _config_alpha(config: dict | None, path: str, rank: int) -> float:
    if not config:
        return float(rank)
    alpha = _pattern_value(config.get("alpha_pattern"), path)
    if alpha is None:
        alpha = config.get("lora_alpha", rank)
    if config.get("use_rslora"):
        return float(alpha) * math.sqrt(rank)  # rsLoRA scales by alpha/sqrt(r)
    return float(alpha)


def modules_from_peft(tensors: dict[str, torch.Tensor], metadata: dict[str, str]
                      ) -> tuple[dict[str, LoraModule], str]:
    """(canonical modules, layout): "diffusers" when keys carry `unet.`/`text_encoder.`."""
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    any_prefixed = False
    for key, tensor in tensors.items():
        split = _split_peft_key(key)
        if split is None:
            unknown.append(key)
            continue
        component, path, part, prefixed = split
        any_prefixed |= prefixed
        group = parts.setdefault((component, path), {})
        if part in group:
            raise BadModule(f"two keys hold the {part} factor of {component}.{path} "
                            f"(one of them is {key})")
        group[part] = tensor
    configs = adapter_configs(metadata)
    modules: dict[str, LoraModule] = {}
    seen: dict[str, str] = {}
    for (component, path), group in parts.items():
        _need_both(f"{component}.{path}", group, "down", "up", ("down (lora_A)", "up (lora_B)"))
        rank = int(group["down"].shape[0])
        if "alpha" in group:
            alpha = _alpha_value(group["alpha"], f"{component}.{path}.alpha")
        else:
            alpha = _config_alpha(configs.get(component), path, rank)
        canonical_path = path.removeprefix("text_model.") if component != "unet" else path
        _add_module(modules, f"{component}.{canonical_path}",
                    LoraModule(group["down"], group["up"], alpha), f"{component}.{path}", seen)
    if unknown:
        raise UnknownKeys(sorted(unknown))
    return modules, "diffusers" if any_prefixed else "peft"


def model_path(name: str) -> tuple[str, str]:
    """Canonical name -> (component, module path as diffusers-layout files name it).

    Text-encoder paths carry `text_model.` for both encoders (`text_encoder.text_model.encoder.
    layers.0.self_attn.q_proj`), whatever transformers is installed: that is what diffusers,
    ComfyUI and A1111 read, and diffusers strips the prefix itself when loading into a flattened
    (transformers >= 5.6) CLIPTextModel. A lookup in a live model must try it with and without.
    """
    component, _, path = name.partition(".")
    if component in ("text_encoder", "text_encoder_2"):
        path = "text_model." + path
    return component, path


def peft_state_dict(lora: LoraFile, dtype: torch.dtype | None = None,
                    paths: dict[str, str] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """`<component>.<path>.lora_A/B.weight` tensors with each module's alpha/rank folded into
    lora_B, so every loader (diffusers, ComfyUI, anything assuming alpha = rank) applies the
    exact strength; plus per-component LoraConfig dicts saying exactly that (alpha = rank).
    `paths` optionally overrides the module path per canonical name (the pipeline's real names).

    The LoraConfig names each module by its canonical path, without `text_model.`: peft matches
    `target_modules` / `rank_pattern` as name suffixes, so that form finds the layer in a nested
    (transformers 4, CLIPTextModelWithProjection) and a flattened (transformers >= 5.6
    CLIPTextModel) text encoder alike. diffusers strips `text_model.` from the tensor keys for a
    flattened model but not from this config: with the prefix it refuses the whole file.
    """
    out: dict[str, torch.Tensor] = {}
    ranks: dict[str, dict[str, int]] = {}
    for name, module in lora.modules.items():
        component, path = model_path(name)
        config_path = split_canonical(name)[1]
        if paths and name in paths:
            path = config_path = paths[name]
        target = dtype or module.up.dtype
        up = (module.up.float() * module.scale).to(target)
        down = module.down.to(target)
        out[f"{component}.{path}.lora_A.weight"] = down.detach().contiguous().cpu()
        out[f"{component}.{path}.lora_B.weight"] = up.detach().contiguous().cpu()
        ranks.setdefault(component, {})[config_path] = module.rank
    configs = {}
    for component, by_path in ranks.items():
        r = Counter(by_path.values()).most_common(1)[0][0]
        pattern = {p: v for p, v in by_path.items() if v != r}
        configs[component] = {"r": r, "lora_alpha": r, "rank_pattern": pattern,
                              "alpha_pattern": dict(pattern), "target_modules": sorted(by_path)}
    return out, configs


def flat_adapter_metadata(configs: dict[str, dict]) -> str:
    """diffusers' `lora_adapter_metadata` value: `{"unet.r": 4, "unet.lora_alpha": 4, ...}`."""
    flat = {f"{c}.{k}": v for c, config in configs.items() for k, v in config.items()}
    return json.dumps(flat, indent=2, sort_keys=True)
