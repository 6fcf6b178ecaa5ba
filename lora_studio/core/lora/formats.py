"""Read and write LoRA files in the layouts other tools exchange (REFERENCE §2).

- kohya (`lora_unet_...lora_down.weight` / `.lora_up.weight` / `.alpha`): the default; what
  AUTOMATIC1111, ComfyUI and Forge load, and diffusers converts on load.
- diffusers / PEFT (`unet.<path>.lora_A.weight` / `.lora_B.weight`, alphas in the
  `lora_adapter_metadata` JSON). On write the alpha/rank scale is folded into lora_B, so the
  file loads at the exact strength even in tools that ignore that JSON.

Files of other kinds (Tucker LoCon, OFT, (IA)³, ...) are refused with a message that names the
kind, never half-loaded. The LyCORIS kinds LoRA Studio generates with (LoHa, LoKr, DoRA,
full-difference) are read by `lycoris_read.read_network` (generate, merge, fuse, resize);
`read_lora`, which convert uses (re-saving a file exactly as a plain LoRA), refuses them by name.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.fileio import atomic_path
from lora_studio.core.lora import layouts
from lora_studio.core.lora.hashing import sshs_legacy_hash, sshs_model_hash
from lora_studio.core.lora.metadata import with_architecture_keys
from lora_studio.core.lora.model import LAYOUTS, LoraFile, LoraModule
from lora_studio.core.lora.sft import load_tensors
from lora_studio.core.models.architecture import (
    arch_of_base_model_version,
    arch_of_modelspec,
    architectures,
    lora_family,
)

# key pattern (searched) -> what the file is; checked before anything else is parsed
_OTHER_KINDS = [
    (r"\.lora_mid\.", "LoCon with Tucker decomposition (lora_mid)"),
    (r"\.(oft_blocks|oft_diag|boft_)", "OFT"),
    (r"\.on_input$", "(IA)³"),
    (r"\.(w_norm|b_norm)$", "LyCORIS norm"),
    (r"lora_embedding_", "embedding LoRA"),
]
# the kinds LoRA Studio generates with, merges, fuses and resizes (core.lora.lycoris) but does
# not convert (no plain LoRA holds them exactly): `read_lora` refuses them,
# `lycoris_read.read_network` reads them
LYCORIS_KINDS = [
    (r"\.hada_", "LyCORIS LoHa"),
    (r"\.lokr_", "LyCORIS LoKr"),
    (r"dora_scale|lora_magnitude_vector", "DoRA"),
    (r"\.(diff|diff_b)$", "LyCORIS full-difference"),
]
_FIX_KIND = ("LoRA Studio supports plain LoRA/LoCon only; convert it to a plain LoRA in the "
             "tool that made it.")
_FIX_LYCORIS = ("To make a plain LoRA of it, re-rank it by SVD: `lora-studio resize FILE --rank 32 "
                "--out NEW.safetensors` (add --model for DoRA; it says how much of the update "
                "it keeps). The Mix, generate, merge and fuse take it as it is.")
_FIX_DAMAGED = "Download or export it again: the file is damaged or not a plain LoRA."
_WRITE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def read_lora(path: str | os.PathLike[str]) -> LoraFile:
    """Read a LoRA file in any supported layout; LoraFormatError names what is wrong."""
    path = Path(path)
    tensors, header = load_tensors(path)
    metadata = {k: v for k, v in header.metadata.items() if k != "format"}
    return lora_from_state_dict(tensors, metadata, source=path.name)


def lora_from_state_dict(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                         *, source: str = "This LoRA") -> LoraFile:
    metadata = dict(metadata or {})
    refuse_other_kinds(tensors.keys(), source)
    if not tensors:
        raise LoraFormatError(f"{source} holds no tensors.", "Export the LoRA again.")
    try:
        # one kohya key makes it a kohya file: any other key is then what is unknown in it
        if any(layouts.is_kohya_key(k) for k in tensors):
            modules, sgm = layouts.modules_from_kohya(tensors)
            layout = "kohya"
        else:
            modules, layout = layouts.modules_from_peft(tensors, metadata)
            sgm = False
    except layouts.BadModule as exc:
        raise LoraFormatError(f"{source}: {exc}.", _FIX_DAMAGED) from None
    except layouts.UnknownKeys as exc:
        raise LoraFormatError(f"{source} has keys that are not LoRA weights LoRA Studio knows: "
                              f"{exc.listing()}.",
                              "It may be another kind of network or a damaged export; export it "
                              "again as a plain LoRA (kohya or diffusers layout).") from None
    for name, module in modules.items():
        _check_shapes(name, module, source)
    return LoraFile(modules=modules, metadata=metadata, layout=layout,
                    arch=detect_arch(modules, metadata, sgm_names=sgm))


def lycoris_kind(keys) -> str | None:
    """The LyCORIS kind (LYCORIS_KINDS) a file's keys show, if any."""
    keys = list(keys)
    for pattern, kind in LYCORIS_KINDS:
        if any(re.search(pattern, k) for k in keys):
            return kind
    return None


def is_lycoris(keys) -> bool:
    return lycoris_kind(keys) is not None


def refuse_other_kinds(keys, source: str, *, lycoris_ok: bool = False) -> None:
    """Refuse what is not a LoRA LoRA Studio reads, naming what it is; the LyCORIS kinds too
    unless `lycoris_ok`."""
    keys = list(keys)
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model."))
           for k in keys):
        raise LoraFormatError(f"{source} is a full model checkpoint, not a LoRA.",
                              "Choose it as the base model instead.")
    if any(k in ("emb_params", "string_to_param", "clip_l", "clip_g") for k in keys):
        raise LoraFormatError(f"{source} is a textual-inversion embedding, not a LoRA.",
                              "Use it as an embedding in the tool you generate with; LoRA Studio "
                              "loads LoRA files only.")
    for pattern, kind in _OTHER_KINDS:
        if any(re.search(pattern, k) for k in keys):
            raise LoraFormatError(f"{source} is a {kind} file; LoRA Studio supports plain "
                                  "LoRA/LoCon only.", _FIX_KIND)
    kind = None if lycoris_ok else lycoris_kind(keys)
    if kind:
        raise LoraFormatError(f"{source} is a {kind} file: convert re-saves plain LoRA/LoCon "
                              "files only, and its update cannot be written exactly as a plain "
                              "LoRA.", _FIX_LYCORIS)


def _check_shapes(name: str, module: LoraModule, source: str) -> None:
    """Refuse factors that cannot be a LoRA update, or that would render NaN / black images."""
    down, up = module.down, module.up
    ok = (down.dim() in (2, 4) and up.dim() == down.dim() and up.shape[1] == down.shape[0]
          and down.shape[0] > 0 and (up.dim() == 2 or tuple(up.shape[2:]) == (1, 1)))
    if not ok:
        raise LoraFormatError(f"{source}: module {name} has mismatched shapes "
                              f"down {tuple(down.shape)} / up {tuple(up.shape)}.", _FIX_DAMAGED)
    if not (down.is_floating_point() and up.is_floating_point()):
        raise LoraFormatError(f"{source}: module {name} holds {down.dtype} / {up.dtype} "
                              "tensors; LoRA weights are floating point.", _FIX_DAMAGED)
    for part, values in (("down weight", down), ("up weight", up),
                         ("alpha", torch.tensor(module.alpha))):
        if not bool(torch.isfinite(values).all()):
            what = "NaN" if bool(torch.isnan(values).any()) else "infinite values"
            raise LoraFormatError(f"{source}: module {name} has {what} in its {part}; it would "
                                  "render black or noise.",
                                  "The file is damaged, or its training diverged: use an earlier "
                                  "checkpoint of it.")


def detect_arch(modules: dict[str, LoraModule], metadata: dict[str, str], *,
                sgm_names: bool = False) -> str | None:
    """"sd1" | "sd2" | "sdxl" (a LoRA family) from the metadata, else from names and widths;
    None if unknown."""
    stated = {arch_of_base_model_version(metadata.get("ss_base_model_version")),
              arch_of_modelspec(metadata.get("modelspec.architecture"))} - {None}
    families = {lora_family(arch) for arch in stated}
    if metadata.get("ss_v2") == "True":
        families.add("sd2")
    for family in ("sdxl", "sd2", "sd1"):  # A1111 asks in this order too
        if family in families:
            return family
    if sgm_names or any(k.startswith("text_encoder_2.") for k in modules):
        return "sdxl"
    widths = {a.lora_family: a.cross_attention_dim for a in architectures()}
    for name, module in modules.items():
        if name.startswith("unet.") and name.endswith("attn2.to_k"):
            for arch, width in widths.items():
                if _fan_in(module) == width:
                    return arch
        if name.startswith("text_encoder.") and name.endswith("self_attn.q_proj"):
            if _fan_in(module) == widths["sd2"]:  # OpenCLIP ViT-H is 1024 wide
                return "sd2"
    return None


def _fan_in(module) -> int:
    """The input width of a module's layer: a LoraModule, or a LyCORIS module (`in_features`)."""
    return int(module.in_features if hasattr(module, "in_features") else module.down.shape[1])


def write_lora(lora: LoraFile, path: str | os.PathLike[str], *, layout: str = "kohya",
               dtype: torch.dtype | None = None) -> Path:
    """Write `lora` atomically; metadata gets `sshs_model_hash` / `sshs_legacy_hash`, and the
    architecture keys (`ss_base_model_version`, `modelspec.architecture`, ...) of `lora.arch`
    where it lacks them (`metadata.with_architecture_keys`).
    layout "kohya" writes every module's real alpha; "diffusers" (= "peft") folds alpha/rank
    into lora_B and records alpha = rank in `lora_adapter_metadata`."""
    import safetensors.torch

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if dtype is not None and dtype not in _WRITE_DTYPES:
        raise ValueError(f"dtype must be one of {_WRITE_DTYPES}, not {dtype}")
    if not lora.modules:
        raise LoraFormatError("This LoRA has no modules; there is nothing to save.")
    drop = {"format", "sshs_model_hash", "sshs_legacy_hash", layouts.ADAPTER_METADATA_KEY}
    metadata = {str(k): str(v) for k, v in lora.metadata.items() if k not in drop}
    metadata = with_architecture_keys(metadata, lora.arch)
    if layout == "kohya":
        tensors = layouts.kohya_state_dict(lora, dtype)
    else:
        tensors, configs = layouts.peft_state_dict(lora, dtype)
        metadata[layouts.ADAPTER_METADATA_KEY] = layouts.flat_adapter_metadata(configs)
    # kohya hashes the tensors serialized with the ss_* metadata only; the data part (what
    # sshs_model_hash covers) does not depend on the metadata at all.
    blob = safetensors.torch.save(tensors, metadata={k: v for k, v in metadata.items()
                                                     if k.startswith("ss_")})
    metadata["sshs_model_hash"] = sshs_model_hash(blob)
    metadata["sshs_legacy_hash"] = sshs_legacy_hash(blob)
    metadata["format"] = "pt"
    path = Path(path)
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
    return path


def lora_from_peft(unet=None, text_encoder=None, *, text_encoder_2=None,
                   adapter_name: str = "default", metadata: dict[str, str] | None = None,
                   arch: str | None = None) -> LoraFile:
    """Build a LoraFile from models carrying a peft LoRA adapter (`model.add_adapter(config)`
    or a PeftModel). Each module's rank and alpha come from its peft layer, so LoraConfig
    `rank_pattern` / `alpha_pattern` / `use_rslora` are honoured exactly."""
    from peft.tuners.lora import LoraLayer

    modules: dict[str, LoraModule] = {}
    for component, model in (("unet", unet), ("text_encoder", text_encoder),
                             ("text_encoder_2", text_encoder_2)):
        if model is None:
            continue
        for name, layer in model.named_modules():
            if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_A:
                continue
            if layer.use_dora.get(adapter_name, False):
                raise LoraFormatError("This adapter uses DoRA; LoRA Studio saves plain LoRA only.")
            r = layer.r[adapter_name]
            alpha = float(layer.lora_alpha[adapter_name])
            if getattr(layer, "use_rslora", {}).get(adapter_name, False):
                alpha *= r ** 0.5
            path = name.removeprefix("base_model.model.")
            if component != "unet":
                path = path.removeprefix("text_model.")
            modules[f"{component}.{path}"] = LoraModule(
                down=layer.lora_A[adapter_name].weight.detach().cpu().clone(),
                up=layer.lora_B[adapter_name].weight.detach().cpu().clone(),
                alpha=alpha,
            )
    if not modules:
        raise LoraFormatError(f"No LoRA adapter named {adapter_name!r} on the given models.")
    metadata = dict(metadata or {})
    return LoraFile(modules=modules, metadata=metadata, layout="kohya",
                    arch=arch or detect_arch(modules, metadata))


def summarize_ranks(lora: LoraFile) -> tuple[int, float]:
    """The most common (rank, alpha): what `ss_network_dim` / `ss_network_alpha` report."""
    pairs = Counter((m.rank, m.alpha) for m in lora.modules.values())
    return pairs.most_common(1)[0][0]
