"""diffusers → original Stable Diffusion single-file layout (what A1111, ComfyUI, Forge load).

The exact inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
`convert_ldm_clip_checkpoint` and `convert_open_clip_checkpoint`
(diffusers/loaders/single_file_utils.py):

  UNet  `model.diffusion_model.*`   input_blocks / middle_block / output_blocks numbering
  VAE   `first_stage_model.*`       encoder.down.N.block / decoder.up.(reversed order) /
                                    mid.attn_1 (q/k/v/proj_out as 1x1 convs)
  SD1   `cond_stage_model.transformer.text_model.*`   (HF CLIP names)
  SD2   `cond_stage_model.model.*`                   (OpenCLIP: fused `in_proj_weight`)
  SDXL  `conditioner.embedders.0.transformer.text_model.*` + `conditioner.embedders.1.model.*`
        (OpenCLIP bigG, with `text_projection` stored transposed)

Every diffusers weight must find a place: an unmapped key is an error, never silently dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from collections.abc import Mapping

from lora_studio.core.errors import LoraFormatError, StudioError
from lora_studio.core.fileio import atomic_write_with
from lora_studio.core.models.architecture import architecture

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TE_PREFIX = "cond_stage_model.transformer."
SD2_TE_PREFIX = "cond_stage_model.model."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_TOP = ("encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.", "decoder.conv_out.",
            "quant_conv.", "post_quant_conv.")
_VAE_ATTN = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.",
             "to_out.0.": "proj_out."}
_OPENCLIP_TOP = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_OPENCLIP_LAYER = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}


class ConversionError(StudioError):
    """A model that does not fit the original SD layout (a bug or an unsupported variant)."""


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


# ------------------------------------------------------------------------------------ UNet
def _unet_prefix_table(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers module prefix → original module prefix, for every block of this UNet."""
    lpb = config["layers_per_block"]
    if not isinstance(lpb, int):
        raise ConversionError("UNets with per-block layers_per_block have no original layout.")
    down_types, up_types = config["down_block_types"], config["up_block_types"]
    table: dict[str, str] = {}
    for b in range(len(down_types)):
        for layer in range(lpb):
            i = 1 + b * (lpb + 1) + layer
            table[f"down_blocks.{b}.resnets.{layer}."] = f"input_blocks.{i}.0."
            table[f"down_blocks.{b}.attentions.{layer}."] = f"input_blocks.{i}.1."
        if b < len(down_types) - 1:
            i = 1 + b * (lpb + 1) + lpb
            table[f"down_blocks.{b}.downsamplers.0.conv."] = f"input_blocks.{i}.0.op."
    table["mid_block.resnets.0."] = "middle_block.0."
    table["mid_block.attentions.0."] = "middle_block.1."
    table["mid_block.resnets.1."] = "middle_block.2."
    for b, block_type in enumerate(up_types):
        for layer in range(lpb + 1):
            i = b * (lpb + 1) + layer
            table[f"up_blocks.{b}.resnets.{layer}."] = f"output_blocks.{i}.0."
            table[f"up_blocks.{b}.attentions.{layer}."] = f"output_blocks.{i}.1."
        if b < len(up_types) - 1:
            slot = 2 if "CrossAttn" in block_type else 1
            i = b * (lpb + 1) + lpb
            table[f"up_blocks.{b}.upsamplers.0.conv."] = f"output_blocks.{i}.{slot}.conv."
    return table


def unet_to_original(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel state dict in `model.diffusion_model.*` layout."""
    blocks = _unet_prefix_table(config)
    out: dict[str, Any] = {}
    for key, tensor in state_dict.items():
        new = _rename(key, _UNET_TOP)
        if new is None:
            prefix = next((p for p in blocks if key.startswith(p)), None)
            if prefix is None:
                raise ConversionError(f"UNet weight {key!r} has no place in the original layout.")
            rest = key[len(prefix):]
            if ".resnets." in prefix:
                rest = _rename(rest, _UNET_RESNET) or rest
            new = blocks[prefix] + rest
        out[UNET_PREFIX + new] = tensor
    return out


# ------------------------------------------------------------------------------------- VAE
def _vae_prefix_table(config: Mapping[str, Any]) -> dict[str, str]:
    n = len(config["up_block_types"])
    table: dict[str, str] = {}
    for i in range(len(config["down_block_types"])):
        table[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        table[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
    for i in range(n):
        table[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{n - 1 - i}.block."
        table[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{n - 1 - i}.upsample."
    for part in ("encoder", "decoder"):
        table[f"{part}.mid_block.resnets.0."] = f"{part}.mid.block_1."
        table[f"{part}.mid_block.resnets.1."] = f"{part}.mid.block_2."
        table[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        table[f"{part}.conv_norm_out."] = f"{part}.norm_out."
    for top in _VAE_TOP:
        table[top] = top
    return table


def vae_to_original(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers AutoencoderKL state dict in `first_stage_model.*` layout."""
    table = _vae_prefix_table(config)
    out: dict[str, Any] = {}
    for key, tensor in state_dict.items():
        prefix = next((p for p in table if key.startswith(p)), None)
        if prefix is None:
            raise ConversionError(f"VAE weight {key!r} has no place in the original layout.")
        rest = key[len(prefix):]
        if prefix.endswith("attentions.0."):
            rest = _rename(rest, _VAE_ATTN) or rest
            if rest.endswith(".weight") and tensor.ndim == 2:
                tensor = tensor.reshape(*tensor.shape, 1, 1)  # linear → 1x1 conv
        elif ".resnets." in prefix:
            rest = rest.replace("conv_shortcut.", "nin_shortcut.")
        out[VAE_PREFIX + table[prefix] + rest] = tensor
    return out


# --------------------------------------------------------------------------- text encoders
def _with_text_model_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """transformers ≥ 5.6 flattened CLIPTextModel (no `text_model.`); the layouts keep it."""
    return {
        (k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v
        for k, v in state_dict.items()
        if not k.endswith("position_ids")
    }


def clip_to_original(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """An HF CLIPTextModel (SD 1.x / SDXL encoder 1) under `prefix` with HF CLIP names, plus the
    `position_ids` buffer the original files carry (0..76, int64)."""
    import torch

    out = {prefix + k: v for k, v in _with_text_model_prefix(state_dict).items()}
    positions = out[f"{prefix}text_model.embeddings.position_embedding.weight"].shape[0]
    out[f"{prefix}text_model.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    return out


def open_clip_to_original(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """An HF CLIP text model in OpenCLIP layout: fused q/k/v `in_proj_*`, transposed projection."""
    import torch

    sd = _with_text_model_prefix(state_dict)
    out: dict[str, Any] = {}
    qkv: dict[str, dict[str, Any]] = {}
    for key, tensor in sd.items():
        if key in _OPENCLIP_TOP:
            out[prefix + _OPENCLIP_TOP[key]] = tensor
            continue
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = tensor.T.contiguous()
            continue
        layer_prefix = "text_model.encoder.layers."
        if not key.startswith(layer_prefix):
            raise ConversionError(f"Text encoder weight {key!r} has no OpenCLIP counterpart.")
        index, rest = key[len(layer_prefix):].split(".", 1)
        block = f"{prefix}transformer.resblocks.{index}."
        if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
            which, kind = rest[len("self_attn."):].split(".", 1)  # "q_proj", "weight"
            qkv.setdefault(f"{block}attn.in_proj_{kind}", {})[which[0]] = tensor
            continue
        new_rest = _rename(rest, _OPENCLIP_LAYER)
        if new_rest is None:
            raise ConversionError(f"Text encoder weight {key!r} has no OpenCLIP counterpart.")
        out[block + new_rest] = tensor
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _sd2_openclip_extras(out: dict[str, Any], hidden: int, num_layers: int) -> None:
    """What the original SD2 file has and diffusers drops: the last (unused, penultimate-layer
    conditioning) resblock 23, `text_projection` and `logit_scale`. Written (as kohya does) so
    A1111 / ComfyUI find the keys they expect; diffusers ignores exactly these keys on load."""
    import torch

    sample = out[f"{SD2_TE_PREFIX}positional_embedding"]
    if num_layers == 23:
        for key in [k for k in out if k.startswith(f"{SD2_TE_PREFIX}transformer.resblocks.22.")]:
            out[key.replace(".resblocks.22.", ".resblocks.23.")] = out[key].clone()
    out[f"{SD2_TE_PREFIX}text_projection"] = torch.eye(hidden, dtype=sample.dtype)
    out[f"{SD2_TE_PREFIX}logit_scale"] = torch.tensor(4.6052, dtype=sample.dtype)


# -------------------------------------------------------------------------------- pipeline
def pipeline_arch(pipe: Any) -> str:
    """"sd1", "sd2", "sd2-v" or "sdxl" of a loaded StableDiffusion(XL)Pipeline."""
    from lora_studio.core.models.architecture import (
        arch_with_prediction,
        detect_arch_from_configs,
        normalize_prediction_type,
    )

    te = getattr(pipe, "text_encoder", None)
    arch = detect_arch_from_configs(
        dict(pipe.unet.config),
        te.config.to_dict() if te is not None else None,
        has_text_encoder_2=getattr(pipe, "text_encoder_2", None) is not None,
        pipeline_class=type(pipe).__name__,
    )
    prediction = normalize_prediction_type(pipe.scheduler.config.get("prediction_type"))
    prediction = prediction or "epsilon"
    return arch_with_prediction(arch, prediction)


def _component_state_dict(module: Any, name: str) -> dict[str, Any]:
    sd = module.state_dict()
    if any(".base_layer." in k or "lora_" in k for k in sd):
        raise LoraFormatError(
            f"The pipeline's {name} still has LoRA adapters attached; they cannot be written into "
            "a base checkpoint as separate layers.",
            "Fuse them first (pipe.fuse_lora(...)) and then remove the adapter layers "
            "(pipe.unload_lora_weights()) before exporting.",
        )
    return sd


def pipeline_to_original_state_dict(pipe: Any, *, dtype: Any = None) -> dict[str, Any]:
    """All weights of an SD 1.x / 2.x / XL pipeline in the original single-file layout.

    `dtype` (e.g. torch.float16) casts floating-point tensors; tensors are on the CPU.
    A v-prediction model also gets ComfyUI's empty `v_pred` marker tensor.
    """
    import torch

    arch = pipeline_arch(pipe)
    out = unet_to_original(_component_state_dict(pipe.unet, "UNet"), pipe.unet.config)
    out.update(vae_to_original(_component_state_dict(pipe.vae, "VAE"), pipe.vae.config))
    te_sd = _component_state_dict(pipe.text_encoder, "text encoder")
    if arch == "sdxl":
        out.update(clip_to_original(te_sd, SDXL_TE1_PREFIX))
        te2 = _component_state_dict(pipe.text_encoder_2, "second text encoder")
        out.update(open_clip_to_original(te2, SDXL_TE2_PREFIX))
        sample = out[f"{SDXL_TE2_PREFIX}positional_embedding"]
        out[f"{SDXL_TE2_PREFIX}logit_scale"] = torch.tensor(4.6052, dtype=sample.dtype)
    elif arch in ("sd2", "sd2-v"):
        out.update(open_clip_to_original(te_sd, SD2_TE_PREFIX))
        cfg = pipe.text_encoder.config
        _sd2_openclip_extras(out, cfg.hidden_size, cfg.num_hidden_layers)
    else:
        out.update(clip_to_original(te_sd, SD1_TE_PREFIX))
    if pipe.scheduler.config.get("prediction_type") == "v_prediction":
        out["v_pred"] = torch.tensor([])
    result = {}
    for key, tensor in out.items():
        tensor = tensor.detach()
        if not tensor.is_meta:  # meta tensors: a dry run that only lists keys and shapes
            tensor = tensor.to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        result[key] = tensor.contiguous()
    return result



def modelspec_metadata(pipe: Any, title: str) -> dict[str, str]:
    """Stability ModelSpec 1.0 header fields for a full checkpoint of this pipeline."""
    arch = pipeline_arch(pipe)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    side = int(pipe.unet.config.sample_size) * factor
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture(arch).modelspec_model,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": title,
        "modelspec.resolution": f"{side}x{side}",
        "modelspec.prediction_type": "v" if arch == "sd2-v" or
        pipe.scheduler.config.get("prediction_type") == "v_prediction" else "epsilon",
    }


def save_single_file(
    pipe: Any,
    path: str | Path,
    *,
    dtype: Any = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `pipe` as one original-layout `.safetensors` checkpoint, atomically; return the path.

    The header carries ModelSpec fields (architecture, resolution, prediction type) plus any
    `metadata` given (string values only).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ConversionError(f"{path.name}: checkpoints are only written as .safetensors.",
                              "Give the output file a .safetensors extension.")
    state = pipeline_to_original_state_dict(pipe, dtype=dtype)
    header = modelspec_metadata(pipe, path.stem)
    header.update({str(k): str(v) for k, v in (metadata or {}).items()})
    atomic_write_with(path, lambda tmp: save_file(state, str(tmp), metadata=header))
    return path
