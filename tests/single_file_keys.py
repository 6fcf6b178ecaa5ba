"""How ComfyUI and A1111 find the checkpoint weight a kohya LoRA key patches, in an SDXL
checkpoint in the original (SGM) layout: their loaders' rules, written out independently of LoRA
Studio's naming code (sources and the rule: tests/e2e/test_sdxl_export_interop.py).

A target is (checkpoint key, rows): rows 0 / 1 / 2 is the q / k / v third of a fused OpenCLIP
`in_proj_weight`, None the whole weight.
"""

from __future__ import annotations

import re

from lora_studio.core.models.original_layout import SDXL_TE1_PREFIX, SDXL_TE2_PREFIX, UNET_PREFIX

Target = tuple  # (str, int | None)

# comfy/lora.py LORA_CLIP_MAP: HF CLIP layer names -> their kohya spelling
LORA_CLIP_MAP = {"mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2", "self_attn.k_proj": "self_attn_k_proj",
                 "self_attn.q_proj": "self_attn_q_proj", "self_attn.v_proj": "self_attn_v_proj",
                 "self_attn.out_proj": "self_attn_out_proj"}
# comfy/utils.py transformers_convert (OpenCLIP -> HF), read backwards
OPEN_CLIP = {"self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc",
             "mlp.fc2": "mlp.c_proj"}
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def _flat(path: str) -> str:
    return path.replace(".", "_")


def comfyui_key_map(checkpoint) -> dict[str, Target]:
    """kohya key stem -> target, as ComfyUI maps an SDXL checkpoint (`model_lora_keys_unet`,
    `model_lora_keys_clip` on `clip_l` / `clip_g` after `SDXL.process_clip_state_dict`)."""
    key_map: dict[str, Target] = {}
    for key in checkpoint:
        if key.startswith(UNET_PREFIX) and key.endswith(".weight"):
            key_map["lora_unet_" + _flat(key[len(UNET_PREFIX):-len(".weight")])] = (key, None)
    for b in range(32):
        for c, lora_c in LORA_CLIP_MAP.items():
            l_key = f"{SDXL_TE1_PREFIX}text_model.encoder.layers.{b}.{c}.weight"
            if l_key in checkpoint:
                key_map[f"lora_te1_text_model_encoder_layers_{b}_{lora_c}"] = (l_key, None)
            block = f"{SDXL_TE2_PREFIX}transformer.resblocks.{b}."
            g_key, rows = ((block + "attn.in_proj_weight", QKV.index(c)) if c in QKV
                           else (f"{block}{OPEN_CLIP[c]}.weight", None))
            if g_key in checkpoint:
                key_map[f"lora_te2_text_model_encoder_layers_{b}_{lora_c}"] = (g_key, rows)
    return key_map


def a1111_layer_names(checkpoint) -> dict[str, str]:
    """A1111's `network_layer_mapping` for SDXL (flattened module names of `sd_model.model` and
    of each `conditioner.embedders[i].wrapped`) -> the checkpoint weight of that module."""
    names = {}
    for key in checkpoint:
        for prefix, head in ((UNET_PREFIX, "diffusion_model_"), ("conditioner.embedders.0.", "0_"),
                             ("conditioner.embedders.1.", "1_")):
            for suffix in (".weight", ".in_proj_weight"):  # a MultiheadAttention owns in_proj
                if key.startswith(prefix) and key.endswith(suffix):
                    names[head + _flat(key[len(prefix):-len(suffix)])] = key
    return names


def a1111_target(stem: str, names: dict[str, str]) -> Target | None:
    """extensions-builtin/Lora/networks.py `load_network` with
    `convert_diffusers_name_to_compvis`, for one kohya stem."""
    key = stem
    m = re.match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", stem)
    if m:
        rest = m[2].replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj")
        key = f"1_model_transformer_resblocks_{m[1]}_{rest.replace('self_attn', 'attn')}"
    if key in names:
        return names[key], None
    m = re.match(r"(.*)_([qkv]_proj)$", key)  # re_x_proj: the MultiheadAttention's in_proj rows
    if m and m[1] in names:
        return names[m[1]], "qkv".index(m[2][0])
    if "lora_unet" in stem:
        key = stem.replace("lora_unet", "diffusion_model")
    elif "lora_te1_text_model" in stem:
        key = stem.replace("lora_te1_text_model", "0_transformer_text_model")
    return (names[key], None) if key in names else None


def target_weight(checkpoint, target: Target):
    key, rows = target
    return checkpoint[key] if rows is None else checkpoint[key].chunk(3)[rows]
