"""Single-file checkpoints (`.safetensors`, legacy pickles) → a diffusers pipeline, offline.

diffusers needs a folder of JSON configs + tokenizer files to build the components; without
one it would go to the hub. LoRA Studio ships them under `resources/configs/<sd15|sd2|sd2-v|sdxl>`
and passes that folder as `config=` with `local_files_only=True`. A different folder (for
example one made with `copy_model_configs` from a diffusers model) can be given as `config_dir`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_studio.core.errors import ModelLoadError
from lora_studio.core.models.architecture import (
    arch_with_prediction,
    architectures,
    checkpoint_prediction_type,
    detect_checkpoint_arch,
)
from lora_studio.core.models.safe_load import (
    is_pickle_file,
    load_pickle_weights_only,
    read_safetensors_header,
)
from lora_studio.core.paths import configs_dir

logger = logging.getLogger(__name__)

CONFIG_FOLDERS = {a.name: a.config_folder for a in architectures()}
_CONFIG_FILE_SUFFIXES = (".json", ".txt", ".model")
_COMPONENT_LABELS = {"AutoencoderKL": "VAE", "UNet2DConditionModel": "UNet",
                     "CLIPTextModelWithProjection": "second text encoder",
                     "CLIPTextModel": "text encoder"}


@dataclass
class CheckpointInfo:
    """What a checkpoint file is, read from its keys, shapes and header."""

    arch: str  # "sd1" | "sd2" | "sd2-v" | "sdxl"
    prediction_type: str  # "epsilon" | "v_prediction"
    metadata: dict[str, str] = field(default_factory=dict)
    # A legacy pickle had to be read in full to be inspected; its tensors are kept here so the
    # loader does not read (and warn about) the file twice.
    state_dict: dict[str, Any] | None = field(default=None, repr=False)


def inspect_checkpoint(path: str | Path, prediction_type: str | None = None) -> CheckpointInfo:
    """Architecture and prediction type of a checkpoint file (see architecture.py)."""
    path = Path(path)
    state_dict = None
    if is_pickle_file(path):
        state_dict = load_pickle_weights_only(path)
        shapes = {k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, "shape")}
        metadata: dict[str, str] = {}
        global_step = state_dict.get("global_step")
    else:
        shapes, metadata = read_safetensors_header(path)
        global_step = None
    family = detect_checkpoint_arch(shapes, path.name)
    prediction = checkpoint_prediction_type(family, shapes, metadata,
                                            global_step if isinstance(global_step, int) else None,
                                            prediction_type)
    if state_dict is not None:
        state_dict.pop("global_step", None)
    arch = arch_with_prediction(family, prediction)
    return CheckpointInfo(arch, prediction, metadata, state_dict)


def default_config_dir(arch: str) -> Path:
    """The shipped full-size config folder for an architecture."""
    return configs_dir() / CONFIG_FOLDERS[arch]


def copy_model_configs(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy only the configs and tokenizer files of a diffusers model folder (no weights):
    a `config_dir` for loading single-file checkpoints of that architecture."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    for src in model_dir.rglob("*"):
        if src.is_file() and src.suffix in _CONFIG_FILE_SUFFIXES:
            dst = out_dir / src.relative_to(model_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return out_dir


def _scheduler(config_dir: Path, prediction_type: str):
    import diffusers

    from lora_studio.core.models.architecture import _read_json

    config = _read_json(config_dir / "scheduler" / "scheduler_config.json")
    name = str(config.get("_class_name", "DDPMScheduler"))
    cls = getattr(diffusers, name, diffusers.DDPMScheduler)
    return cls.from_config(config, prediction_type=prediction_type)


def _missing_weights(pipe: Any) -> list[str]:
    """Parameters a checkpoint did not provide (diffusers leaves them on the meta device)."""
    missing = []
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for param_name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.is_meta:
                missing.append(f"{name}.{param_name}")
    return missing


def load_single_file_pipeline(
    path: str | Path,
    arch: str,
    prediction_type: str,
    *,
    config_dir: str | Path | None = None,
    torch_dtype: Any = None,
    state_dict: dict[str, Any] | None = None,
):
    """Build a StableDiffusion(XL)Pipeline from one checkpoint, fully offline."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    from lora_studio.core.models.tokenizers import pipeline_tokenizers

    path = Path(path)
    config_dir = Path(config_dir) if config_dir is not None else default_config_dir(arch)
    if not (config_dir / "model_index.json").is_file():
        raise ModelLoadError(f"The config folder {config_dir} has no model_index.json.",
                             "Reinstall LoRA Studio, or give a folder made with "
                             "copy_model_configs.")
    xl = arch == "sdxl"
    extra: dict[str, Any] = {} if xl else {
        "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    scheduler = _scheduler(config_dir, prediction_type)
    if state_dict is None and is_pickle_file(path):  # never let anything else unpickle it
        state_dict = load_pickle_weights_only(path)
        state_dict.pop("global_step", None)
    try:
        if state_dict is None:
            cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
            pipe = cls.from_single_file(str(path), config=str(config_dir), local_files_only=True,
                                        torch_dtype=torch_dtype, scheduler=scheduler,
                                        **pipeline_tokenizers(config_dir), **extra)
        else:
            pipe = _pipeline_from_state_dict(state_dict, xl, config_dir, torch_dtype, scheduler,
                                             extra)
    except ModelLoadError:
        raise
    except SingleFileComponentError as exc:
        first = str(exc.message or exc).splitlines()[0]
        part = next((label for cls_name, label in _COMPONENT_LABELS.items() if cls_name in first),
                    "component")
        raise ModelLoadError(
            f"{path.name} has no {part} weights, so it is not a complete {arch} checkpoint "
            f"({first})",
            "Use a complete checkpoint (UNet, VAE and text encoder in one file) or a diffusers "
            "model folder.",
        ) from exc
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        raise ModelLoadError(
            f"{path.name} could not be loaded as an {arch} checkpoint: {exc}",
            "Check that the file is a complete Stable Diffusion checkpoint of that family; if it "
            "is a different size (a custom model), pass a matching config folder.",
        ) from exc
    missing = _missing_weights(pipe)
    if missing:
        raise ModelLoadError(
            f"{path.name} lacks {len(missing)} weights the {arch} model needs "
            f"(for example {', '.join(missing[:3])}).",
            "The file is incomplete or is not a full text-to-image checkpoint (some files leave "
            "out the VAE or text encoder); use a complete checkpoint or a diffusers folder.",
        )
    return pipe


def _pipeline_from_state_dict(state_dict, xl, config_dir, torch_dtype, scheduler, extra):
    """The same assembly `from_single_file` does, from an in-memory state dict (used for legacy
    pickles, which are read with our weights-only loader, never by diffusers)."""
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from lora_studio.core.models.tokenizers import load_tokenizer

    common = {"config": str(config_dir), "local_files_only": True, "torch_dtype": torch_dtype}
    parts: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_single_file(state_dict, subfolder="unet", **common),
        "vae": AutoencoderKL.from_single_file(state_dict, subfolder="vae", **common),
        "text_encoder": create_diffusers_clip_model_from_ldm(
            CLIPTextModel, state_dict, subfolder="text_encoder", **common),
        "tokenizer": load_tokenizer(config_dir / "tokenizer"),
        "scheduler": scheduler,
    }
    if xl:
        parts["text_encoder_2"] = create_diffusers_clip_model_from_ldm(
            CLIPTextModelWithProjection, state_dict, subfolder="text_encoder_2", **common)
        parts["tokenizer_2"] = load_tokenizer(config_dir / "tokenizer_2")
        return StableDiffusionXLPipeline(**parts)
    return StableDiffusionPipeline(**parts, **extra)
