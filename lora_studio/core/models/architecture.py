"""Which Stable Diffusion family a model belongs to, from its configs or checkpoint keys.

Architectures: "sd1" (SD 1.x), "sd2" (SD 2.x epsilon, 512), "sd2-v" (SD 2.x v-prediction, 768),
"sdxl" (SDXL base). What each is called and sized (its label, LoRA family, native size, kohya
`ss_base_model_version`, ModelSpec architecture, prediction type) is tabled once, in the
registry below (`architecture(name)`); every other per-architecture table derives from it.
The heuristics:

Diffusers folders (`model_index.json` + component configs):
  - sdxl: the UNet has `addition_embed_type == "text_time"`, or the pipeline class is an XL one.
  - sd2:  the UNet's `cross_attention_dim` is 1024 (OpenCLIP ViT-H), or it uses linear
          projections and the text encoder is OpenCLIP-style (`hidden_act == "gelu"`; SD 1.x's
          CLIP ViT-L uses "quick_gelu"). This is what tells the tiny SD2-style models apart.
  - sd1:  everything else with a UNet and a CLIP text encoder.
  The scheduler's `prediction_type` decides sd2 vs sd2-v.

Single-file checkpoints (original SD / SGM layout), from keys and shapes:
  - diffusers' `infer_diffusers_model_type` first ("v1", "v2", "xl_base", and the kinds we do
    not support: inpainting, refiner, upscaler, controlnet, ...). It needs full-size models
    (it looks at e.g. text-encoder layer 9), so our own key-prefix fallback follows:
    `conditioner.embedders.1.model.*` → sdxl, `cond_stage_model.model.*` (OpenCLIP) or a
    1024-wide cross-attention → sd2, `cond_stage_model.transformer.*` / a UNet → sd1.
  - The prediction type cannot be read off the weights. In order: the caller's
    `prediction_type=`; the file's ModelSpec metadata `modelspec.prediction_type`; a `v_pred`
    key (ComfyUI's marker); for SD2 diffusers' rule (a `global_step` of 875000 is the 512 base
    epsilon model, anything else is taken as 768 v-prediction); otherwise epsilon.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from lora_studio.core.errors import ModelLoadError

logger = logging.getLogger(__name__)

PREDICTION_TYPES = ("epsilon", "v_prediction")
_SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


# ------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Architecture:
    """Everything that is named or sized per architecture. The one table of them is
    `_REGISTRY`; every other per-architecture table in the code is derived from it."""

    name: str  # "sd1" | "sd2" | "sd2-v" | "sdxl"
    label: str  # what people call it (the model picker, status bar, LoRA cards)
    lora_family: str  # what a LoRA file can tell: SD 2.x LoRAs do not say epsilon or v
    native_size: int  # the side of the square images it was trained on
    base_model_version: str  # kohya's `ss_base_model_version`
    modelspec_model: str  # ModelSpec `modelspec.architecture` of a full checkpoint
    prediction_type: str  # "epsilon" | "v_prediction"
    cross_attention_dim: int  # the width of the text conditioning the UNet attends to
    config_folder: str  # resources/configs/<folder>: the configs of a single-file checkpoint
    lora_implementation: str = "diffusers"  # `modelspec.implementation` of its LoRA files

    @property
    def modelspec_lora(self) -> str:
        """ModelSpec `modelspec.architecture` of a LoRA for it."""
        return f"{self.modelspec_model}/lora"

    @property
    def is_v2(self) -> bool:
        """kohya's `ss_v2`: an SD 2.x model (OpenCLIP text encoder)."""
        return self.lora_family == "sd2"


_REGISTRY: dict[str, Architecture] = {a.name: a for a in (
    Architecture("sd1", "SD 1.x", "sd1", 512, "sd_v1", "stable-diffusion-v1", "epsilon", 768,
                 "sd15"),
    Architecture("sd2", "SD 2.x", "sd2", 512, "sd_v2", "stable-diffusion-v2-512", "epsilon",
                 1024, "sd2"),
    Architecture("sd2-v", "SD 2.x (v-prediction)", "sd2", 768, "sd_v2_v",
                 "stable-diffusion-v2-768-v", "v_prediction", 1024, "sd2-v"),
    Architecture("sdxl", "SDXL", "sdxl", 1024, "sdxl_base_v1-0", "stable-diffusion-xl-v1-base",
                 "epsilon", 2048, "sdxl", lora_implementation=_SGM_IMPLEMENTATION),
)}

ARCHITECTURES = tuple(_REGISTRY)
# what people call each architecture (the model picker and status bar show it)
ARCH_DISPLAY = {a.name: a.label for a in _REGISTRY.values()}
# the architectures a LoRA file can be told apart as ("sd2" covers "sd2-v")
LORA_FAMILIES = tuple(dict.fromkeys(a.lora_family for a in _REGISTRY.values()))


def architectures() -> tuple[Architecture, ...]:
    """Every architecture, in the order of ARCHITECTURES."""
    return tuple(_REGISTRY.values())


def architecture(name: str) -> Architecture:
    """The registry entry of "sd1", "sd2", "sd2-v" or "sdxl"; ValueError for anything else."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown architecture {name!r}; expected one of "
                         f"{', '.join(ARCHITECTURES)}.") from None


def base_model_version(arch: str) -> str:
    """kohya's `ss_base_model_version` for `arch`: "sd2-v" -> "sd_v2_v"."""
    return architecture(arch).base_model_version


def lora_family(arch: str) -> str:
    """What a LoRA for `arch` is filed as (LoraFile.arch): "sd2-v" -> "sd2"."""
    return architecture(arch).lora_family


def native_size(arch: str) -> int:
    """The side of the square images `arch` was trained on: 512, 768 or 1024."""
    return architecture(arch).native_size


def modelspec_architecture(arch: str) -> str:
    """ModelSpec `modelspec.architecture` of a LoRA for `arch`."""
    return architecture(arch).modelspec_lora


def arch_of_base_model_version(version: str | None) -> str | None:
    """The architecture a kohya `ss_base_model_version` names; None if it names none of ours.
    Exact values first, then kohya's other spellings ("sd_v1_v", "sdxl_base_v0-9", ...)."""
    version = (version or "").strip()
    for arch in _REGISTRY.values():
        if version == arch.base_model_version:
            return arch.name
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2"):
        return "sd2-v" if version.endswith("_v") else "sd2"
    if version.startswith("sd_v1"):
        return "sd1"
    return None


def arch_of_modelspec(spec: str | None) -> str | None:
    """The architecture a `modelspec.architecture` ("stable-diffusion-v1/lora", or a
    checkpoint's "stable-diffusion-xl-v1-base") names; None if it names none of ours."""
    model = (spec or "").strip().split("/", 1)[0]
    for arch in _REGISTRY.values():
        if model == arch.modelspec_model:
            return arch.name
    if model.startswith("stable-diffusion-xl"):
        return "sdxl"
    if model.startswith("stable-diffusion-v2"):
        return "sd2-v" if model.endswith("-v") else "sd2"
    if model.startswith("stable-diffusion-v1"):
        return "sd1"
    return None

_UNSUPPORTED_KINDS = {
    "inpainting": "an SD 1.x inpainting model",
    "inpainting_v2": "an SD 2.x inpainting model",
    "xl_inpaint": "an SDXL inpainting model",
    "xl_refiner": "the SDXL refiner",
    "playground-v2-5": "a Playground v2.5 model",
    "upscale": "the SD x4 upscaler",
    "instruct-pix2pix": "an InstructPix2Pix model",
}
_FIX_SUPPORTED = "Choose a Stable Diffusion 1.x, 2.x or SDXL base model (text-to-image)."


def normalize_prediction_type(value: str | None) -> str | None:
    """"v", "v-prediction", "v_prediction" → "v_prediction"; "eps"/"epsilon" → "epsilon"."""
    if value is None:
        return None
    v = str(value).strip().lower().replace("-", "_")
    if v in ("v", "v_prediction", "v_pred", "vpred"):
        return "v_prediction"
    if v in ("eps", "epsilon"):
        return "epsilon"
    raise ModelLoadError(
        f"Unknown prediction type {value!r}.", "Use 'epsilon' or 'v_prediction'."
    )


def arch_with_prediction(arch: str, prediction_type: str) -> str:
    """SD2 splits into "sd2" / "sd2-v" by prediction type; other families keep their name."""
    if arch in ("sd2", "sd2-v"):
        return "sd2-v" if prediction_type == "v_prediction" else "sd2"
    return arch


# ----------------------------------------------------------------------- diffusers folders
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}).",
                             "The model folder is damaged; download or copy it again.") from exc


def detect_arch_from_configs(
    unet_config: Mapping[str, Any],
    text_encoder_config: Mapping[str, Any] | None,
    *,
    has_text_encoder_2: bool = False,
    pipeline_class: str = "",
) -> str:
    """"sd1", "sd2" or "sdxl" from component configs (no prediction type applied)."""
    if unet_config.get("in_channels", 4) != 4:
        raise ModelLoadError(
            f"This UNet takes {unet_config.get('in_channels')} input channels: it is an inpainting "
            "or image-conditioned model, which LoRA Studio does not support.", _FIX_SUPPORTED)
    if unet_config.get("addition_embed_type") == "text_time" or "XL" in pipeline_class:
        if not has_text_encoder_2 or text_encoder_config is None:
            raise ModelLoadError("This is an SDXL refiner (it has only one text encoder), which "
                                 "LoRA Studio does not support.", _FIX_SUPPORTED)
        return "sdxl"
    te = text_encoder_config or {}
    if unet_config.get("cross_attention_dim") == 1024:
        return "sd2"
    if unet_config.get("use_linear_projection") and te.get("hidden_act") == "gelu":
        return "sd2"
    return "sd1"


def detect_folder_arch(folder: str | Path) -> tuple[str, str]:
    """(arch, prediction_type) of a diffusers model folder. arch already includes "sd2-v"."""
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    unet = _read_json(folder / "unet" / "config.json")
    if not unet:
        raise ModelLoadError(
            f"{folder} has no unet/config.json, so it is not a Stable Diffusion model folder.",
            "Point to the folder that holds model_index.json, unet/, vae/, text_encoder/ ...")
    te_path = folder / "text_encoder" / "config.json"
    te = _read_json(te_path) if te_path.is_file() else None
    arch = detect_arch_from_configs(
        unet, te,
        has_text_encoder_2=(folder / "text_encoder_2" / "config.json").is_file(),
        pipeline_class=str(index.get("_class_name", "")),
    )
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    prediction = normalize_prediction_type(scheduler.get("prediction_type")) or "epsilon"
    return arch_with_prediction(arch, prediction), prediction


# ------------------------------------------------------------------- single-file checkpoints
def _diffusers_model_type(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """diffusers' own guess, fed meta tensors so no weights are read."""
    import torch
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items() if isinstance(s, tuple)}
    try:
        return infer_diffusers_model_type(fake)
    except Exception:  # a branch for some other model family tripped on the meta tensors
        return "unknown"


def _describe_non_base(keys: list[str]) -> str | None:
    if any(k.startswith(("lora_unet_", "lora_te", "unet.", "text_encoder.")) and "lora" in k
           for k in keys):
        return "a LoRA, not a base model (add it in the Mix tab or with --lora instead)"
    if any(k.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for k in keys):
        return ("the weights of a single diffusers component (a UNet), not a full checkpoint "
                "(point to the diffusers model folder instead)")
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        return "a VAE on its own, not a full checkpoint"
    return None


def detect_checkpoint_arch(shapes: Mapping[str, tuple[int, ...]], name: str = "checkpoint") -> str:
    """"sd1", "sd2" or "sdxl" from a checkpoint's key → shape map (no prediction type applied)."""
    keys = list(shapes)
    kind = _diffusers_model_type(shapes)
    if kind in _UNSUPPORTED_KINDS:
        raise ModelLoadError(f"{name} is {_UNSUPPORTED_KINDS[kind]}, which LoRA Studio does not "
                             "support.", _FIX_SUPPORTED)
    has_unet = any(k.startswith("model.diffusion_model.") for k in keys)
    if not has_unet:
        what = _describe_non_base(keys) or ("not a Stable Diffusion checkpoint (it has no "
                                            "model.diffusion_model.* UNet weights)")
        raise ModelLoadError(f"{name} is {what}.", _FIX_SUPPORTED)
    if kind == "xl_base" or any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        if not any(k.startswith("conditioner.embedders.0.") for k in keys):
            raise ModelLoadError(f"{name} looks like an SDXL refiner, which LoRA Studio does not "
                                 "support.", _FIX_SUPPORTED)
        return "sdxl"
    if any(k.startswith("model.diffusion_model.label_emb.") for k in keys):
        raise ModelLoadError(f"{name} has class/size conditioning but no SDXL text encoders; "
                             "LoRA Studio cannot tell what it is.", _FIX_SUPPORTED)
    cross_1024 = any(".attn2.to_k.weight" in k and shapes[k][-1] == 1024 for k in keys)
    if kind == "v2" or cross_1024 or any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if kind not in ("v1", "unknown"):
        raise ModelLoadError(f"{name} is a {kind!r} model, not a Stable Diffusion base model.",
                             _FIX_SUPPORTED)
    if not any(k.startswith("cond_stage_model.transformer.") for k in keys):
        logger.warning("%s has no SD 1.x text encoder weights; treating it as SD 1.x", name)
    return "sd1"


def checkpoint_prediction_type(
    arch: str,
    keys: Mapping[str, Any],
    metadata: Mapping[str, str] | None,
    global_step: int | None,
    override: str | None = None,
) -> str:
    """The prediction type of a single-file checkpoint (see the module doc for the order)."""
    if override is not None:
        return normalize_prediction_type(override)
    spec = (metadata or {}).get("modelspec.prediction_type")
    if spec:
        try:
            return normalize_prediction_type(spec)
        except ModelLoadError:
            logger.warning("Ignoring unknown modelspec.prediction_type %r", spec)
    if "v_pred" in keys:
        return "v_prediction"
    if arch in ("sd2", "sd2-v"):
        guess = "epsilon" if global_step == 875000 else "v_prediction"
        logger.warning(
            "SD 2.x checkpoint without a recorded prediction type: assuming %s (diffusers' rule). "
            "If images come out as noise or flat colour, load it again with prediction type "
            "'%s'.", guess, "epsilon" if guess == "v_prediction" else "v_prediction")
        return guess
    return "epsilon"
