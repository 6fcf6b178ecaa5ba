"""Module names: canonical (diffusers / transformers) <-> kohya flattened keys.

kohya keys are a prefix plus the module path with every `.` replaced by `_`
(`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0`). Undoing that needs
to know which underscores belong to a name: `_unflatten` splits on `_` and re-joins the segments
of the known multi-word names below (longest first). SDXL files from kohya use the original SGM
UNet names (`input_blocks_4_1_...`); they are mapped to diffusers names here and back on write.
"""

from __future__ import annotations

import re

# Names that contain underscores, in diffusers UNets, SGM UNets and CLIP text models.
_COMPOUND_NAMES = {
    # diffusers UNet
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v",
    "to_out", "proj_in", "proj_out", "conv_shortcut", "time_emb_proj", "conv_in", "conv_out",
    "conv_norm_out", "time_embedding", "linear_1", "linear_2", "add_embedding", "add_time_proj",
    "time_proj", "class_embedding", "encoder_hid_proj", "norm_out",
    # SGM UNet (kohya SDXL)
    "input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "in_layers",
    "out_layers", "emb_layers", "skip_connection",
    # CLIP text model
    "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "final_layer_norm",
    "layer_norm1", "layer_norm2", "token_embedding", "position_embedding", "text_projection",
}
_MAX_PARTS = max(name.count("_") + 1 for name in _COMPOUND_NAMES)

KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                  "lora_te2_": "text_encoder_2"}
_SGM_ROOTS = ("input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out")
_SDXL_LAYERS_PER_BLOCK = 2


def unflatten(flat: str) -> str:
    """`down_blocks_0_attentions_0_proj_in` -> `down_blocks.0.attentions.0.proj_in`."""
    parts = flat.split("_")
    out: list[str] = []
    i = 0
    while i < len(parts):
        for n in range(min(_MAX_PARTS, len(parts) - i), 1, -1):
            candidate = "_".join(parts[i : i + n])
            if candidate in _COMPOUND_NAMES:
                out.append(candidate)
                i += n
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def flatten(path: str) -> str:
    return path.replace(".", "_")


# ----------------------------------------------------------------------------- kohya <-> canonical
def kohya_to_canonical(stem: str) -> tuple[str, bool] | None:
    """`lora_unet_...` key stem -> (canonical name, uses SGM/SDXL names); None if not kohya."""
    for prefix in sorted(KOHYA_PREFIXES, key=len, reverse=True):
        if stem.startswith(prefix):
            component = KOHYA_PREFIXES[prefix]
            path = unflatten(stem[len(prefix):])
            if component == "unet":
                if path.split(".")[0] in _SGM_ROOTS:
                    return "unet." + sgm_to_diffusers(path), True
                return "unet." + path, False
            return f"{component}.{path.removeprefix('text_model.')}", False
    return None


def canonical_to_kohya(name: str, *, sdxl: bool) -> str:
    """Canonical module name -> kohya key stem (SGM names and `lora_te1_/te2_` for SDXL)."""
    component, _, path = name.partition(".")
    if component == "unet":
        return "lora_unet_" + flatten(diffusers_to_sgm(path) if sdxl else path)
    if component == "text_encoder":
        return ("lora_te1_" if sdxl else "lora_te_") + "text_model_" + flatten(path)
    if component == "text_encoder_2":
        return "lora_te2_text_model_" + flatten(path)
    raise ValueError(f"not a canonical LoRA module name: {name!r}")


# ----------------------------------------------------------------------------- SGM <-> diffusers
_RESNET_SGM_TO_DIFFUSERS = {"in_layers.2": "conv1", "out_layers.3": "conv2",
                            "emb_layers.1": "time_emb_proj", "skip_connection": "conv_shortcut"}
_RESNET_DIFFUSERS_TO_SGM = {v: k for k, v in _RESNET_SGM_TO_DIFFUSERS.items()}
_FIXED_SGM_TO_DIFFUSERS = {"input_blocks.0.0": "conv_in", "out.2": "conv_out",
                           "time_embed.0": "time_embedding.linear_1",
                           "time_embed.2": "time_embedding.linear_2",
                           "label_emb.0.0": "add_embedding.linear_1",
                           "label_emb.0.2": "add_embedding.linear_2"}
_FIXED_DIFFUSERS_TO_SGM = {v: k for k, v in _FIXED_SGM_TO_DIFFUSERS.items()}


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def sgm_to_diffusers(path: str, layers_per_block: int = _SDXL_LAYERS_PER_BLOCK) -> str:
    """SGM UNet module path (as in kohya SDXL files) -> diffusers UNet module path."""
    for old, new in _FIXED_SGM_TO_DIFFUSERS.items():
        if path == old or path.startswith(old + "."):
            return new + path[len(old):]
    per = layers_per_block + 1
    m = re.fullmatch(r"(input_blocks|middle_block|output_blocks)\.(\d+)(?:\.(\d+))?(?:\.(.*))?",
                     path)
    if not m:
        return path
    root, n, k, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4) or ""
    if root == "middle_block":  # middle_block.{0,1,2}.rest: resnet, attention, resnet
        rest = ".".join(filter(None, [k, rest]))
        kind = {0: "resnets.0", 1: "attentions.0", 2: "resnets.1"}[n]
        if kind.startswith("resnets"):
            rest = _rename_resnet(rest, _RESNET_SGM_TO_DIFFUSERS)
        return f"mid_block.{kind}.{rest}".rstrip(".")
    k = int(k or 0)
    if root == "input_blocks":
        block, layer = divmod(n - 1, per)
        if layer == layers_per_block:  # the downsampler: input_blocks.N.0.op
            return f"down_blocks.{block}.downsamplers.0.{rest.replace('op', 'conv', 1)}".rstrip(".")
        base = f"down_blocks.{block}"
    else:
        block, layer = divmod(n, per)
        base = f"up_blocks.{block}"
        if k == 2 or (k == 1 and rest.split(".")[0] == "conv"):  # the upsampler
            return f"{base}.upsamplers.0.{rest}".rstrip(".")
    if k == 0:
        rest = _rename_resnet(rest, _RESNET_SGM_TO_DIFFUSERS)
        return f"{base}.resnets.{layer}.{rest}".rstrip(".")
    return f"{base}.attentions.{layer}.{rest}".rstrip(".")


def diffusers_to_sgm(path: str, layers_per_block: int = _SDXL_LAYERS_PER_BLOCK) -> str:
    """diffusers UNet module path -> SGM module path (the names kohya writes for SDXL)."""
    for old, new in _FIXED_DIFFUSERS_TO_SGM.items():
        if path == old or path.startswith(old + "."):
            return new + path[len(old):]
    per = layers_per_block + 1
    m = re.fullmatch(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)"
                     r"\.(\d+)(?:\.(.*))?", path)
    if m:
        root, kind, rest = m.group(1), m.group(3), m.group(5) or ""
        block, layer = int(m.group(2)), int(m.group(4))
        if kind == "resnets":
            rest = _rename_resnet(rest, _RESNET_DIFFUSERS_TO_SGM)
        if root == "down_blocks":
            if kind == "downsamplers":
                rest = rest.replace("conv", "op", 1)
                return f"input_blocks.{per * (block + 1)}.0.{rest}".rstrip(".")
            n = 1 + per * block + layer
            return f"input_blocks.{n}.{0 if kind == 'resnets' else 1}.{rest}".rstrip(".")
        if kind == "upsamplers":  # SDXL: only the up blocks with attention have an upsampler
            return f"output_blocks.{per * block + layers_per_block}.2.{rest}".rstrip(".")
        n = per * block + layer
        return f"output_blocks.{n}.{0 if kind == 'resnets' else 1}.{rest}".rstrip(".")
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)(?:\.(.*))?", path)
    if m:
        kind, layer, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        if kind == "resnets":
            rest = _rename_resnet(rest, _RESNET_DIFFUSERS_TO_SGM)
            return f"middle_block.{2 * layer}.{rest}".rstrip(".")
        return f"middle_block.1.{rest}".rstrip(".")
    return path
