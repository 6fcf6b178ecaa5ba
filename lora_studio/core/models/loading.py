"""Loading a base model from whatever the user has: the built-in tiny model, a diffusers folder,
a repo id already in the local Hugging Face cache, or a single checkpoint file.

    source = resolve_model("~/models/dreamshaper_8.safetensors")   # what it is, cheaply
    pipe = load_pipeline(source)                                    # offline, always

`resolve_model` reads only configs / file headers (a legacy pickle has to be read in full).
`load_pipeline` never touches the network (`local_files_only=True`), never loads a safety
checker, and raises `ModelLoadError` / `UnsafeFileError` with a fix the user can act on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lora_studio.core.errors import ConfigError, ModelLoadError
from lora_studio.core.models.architecture import (
    arch_with_prediction,
    detect_folder_arch,
    normalize_prediction_type,
)
from lora_studio.core.models.hub_cache import looks_like_repo_id, resolve_cached_repo
from lora_studio.core.models.safe_load import CHECKPOINT_SUFFIXES

logger = logging.getLogger(__name__)

BUILTIN_NAMES = ("tiny", "builtin", "builtin-tiny")
KINDS = ("builtin-tiny", "diffusers-folder", "hub-cache", "single-file")


@dataclass
class ModelSource:
    """Where a base model is and what it is.

    kind: "builtin-tiny" | "diffusers-folder" | "hub-cache" | "single-file"
    path: the model folder (hub-cache: the snapshot folder) or the checkpoint file
    arch: "sd1" | "sd2" | "sd2-v" | "sdxl"
    prediction_type: "epsilon" | "v_prediction"
    name: short display name (folder / file stem / repo id)
    """

    kind: str
    path: Path
    arch: str
    prediction_type: str
    name: str
    repo_id: str | None = None

    @property
    def is_sdxl(self) -> bool:
        return self.arch == "sdxl"


def _missing_path_error(spec: str) -> ModelLoadError:
    return ModelLoadError(
        f"No model found at {spec}: that file or folder does not exist.",
        "Check the path (drag the model file or folder in again), or use 'tiny' for the "
        "built-in test model.",
    )


def _folder_source(path: Path, kind: str, name: str, repo_id: str | None,
                   prediction_type: str | None) -> ModelSource:
    arch, prediction = detect_folder_arch(path)
    if prediction_type is not None:
        prediction = normalize_prediction_type(prediction_type)
        arch = arch_with_prediction(arch, prediction)
    return ModelSource(kind, path, arch, prediction, name, repo_id)


def _file_source(path: Path, kind: str, name: str, repo_id: str | None,
                 prediction_type: str | None) -> tuple[ModelSource, dict[str, Any] | None]:
    """The source, plus the tensors of a legacy pickle (which had to be read in full)."""
    from lora_studio.core.models.single_file import inspect_checkpoint

    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ModelLoadError(
            f"{path.name} is not a model checkpoint LoRA Studio can read.",
            "Use a .safetensors checkpoint or a diffusers model folder (one with "
            "model_index.json).",
        )
    info = inspect_checkpoint(path, prediction_type)
    return ModelSource(kind, path, info.arch, info.prediction_type, name, repo_id), info.state_dict


def resolve_model(
    spec: str | Path | ModelSource | None,
    *,
    prediction_type: str | None = None,
) -> ModelSource:
    """Work out what `spec` names: None / "tiny" / "builtin" → the built-in tiny model; a folder
    with model_index.json; a .safetensors (or legacy pickle) checkpoint; an "org/name" repo id
    in the local hub cache. `prediction_type` overrides the detected one."""
    return _resolve(spec, prediction_type)[0]


def _resolve(spec, prediction_type) -> tuple[ModelSource, dict[str, Any] | None]:
    if isinstance(spec, ModelSource):
        if prediction_type is None:
            return spec, None
        prediction = normalize_prediction_type(prediction_type)
        return replace(spec, arch=arch_with_prediction(spec.arch, prediction),
                       prediction_type=prediction), None
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in BUILTIN_NAMES):
        from lora_studio.core.models.tiny import builtin_tiny_model_dir

        return _folder_source(builtin_tiny_model_dir(), "builtin-tiny", "Tiny Shapes (built-in)",
                              None, prediction_type), None
    text = os.fspath(spec).strip() if not isinstance(spec, Path) else str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"{path} is a folder but not a diffusers model (it has no model_index.json).",
                "Point to the model folder itself (the one with model_index.json, unet/, vae/ ...) "
                "or to a .safetensors checkpoint file.",
            )
        return _folder_source(path, "diffusers-folder", path.name, None, prediction_type), None
    if path.is_file():
        return _file_source(path, "single-file", path.stem, None, prediction_type)
    if isinstance(spec, str) and looks_like_repo_id(text):
        kind, found = resolve_cached_repo(text)
        if kind == "diffusers-folder":
            return _folder_source(found, "hub-cache", text, text, prediction_type), None
        return _file_source(found, "hub-cache", text, text, prediction_type)
    raise _missing_path_error(text)


# --------------------------------------------------------------------------------- loading
_DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
                "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def as_torch_dtype(value: Any) -> Any:
    """None, a torch.dtype, or a name: "fp32"/"float32", "fp16"/"float16", "bf16"/"bfloat16"."""
    if value is None or not isinstance(value, str):
        return value
    import torch

    name = _DTYPE_NAMES.get(value.strip().lower())
    if name is None:
        raise ConfigError("torch_dtype", f"unknown precision {value!r}",
                          "Use one of fp32, fp16, bf16.")
    return getattr(torch, name)


def weights_variant(folder: Path) -> str | None:
    """"fp16" when the folder's UNet weights exist only as a hub variant
    (`diffusion_pytorch_model.fp16.safetensors`, what `variant="fp16"` downloads), else None."""
    unet = folder / "unet"
    plain = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
             "diffusion_pytorch_model.safetensors.index.json")
    if not unet.is_dir() or any((unet / name).is_file() for name in plain):
        return None
    for variant in ("fp16", "bf16"):
        if any(unet.glob(f"diffusion_pytorch_model*.{variant}.safetensors*")) \
                or any(unet.glob(f"diffusion_pytorch_model.safetensors.index.{variant}.json")):
            return variant
    return None


def _load_folder(source: ModelSource, torch_dtype: Any):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from lora_studio.core.models.tokenizers import pipeline_tokenizers

    if source.arch == "sdxl":
        cls, extra = StableDiffusionXLPipeline, {}
    else:
        cls = StableDiffusionPipeline
        extra = {"safety_checker": None, "feature_extractor": None,
                 "requires_safety_checker": False}
    if torch_dtype is not None:
        extra["dtype"] = torch_dtype
    variant = weights_variant(source.path)
    if variant:
        extra["variant"] = variant
    try:
        extra.update(pipeline_tokenizers(source.path))  # loaded once per process
        pipe = cls.from_pretrained(str(source.path), local_files_only=True, **extra)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"The model {source.name} ({source.path}) could not be loaded: {exc}",
            "The folder may be incomplete or damaged; download or copy it again, or use a "
            ".safetensors checkpoint of the model.",
        ) from exc
    if pipe.scheduler.config.get("prediction_type") != source.prediction_type:
        pipe.scheduler = type(pipe.scheduler).from_config(
            pipe.scheduler.config, prediction_type=source.prediction_type)
    return pipe


def load_pipeline(
    spec: str | Path | ModelSource | None,
    *,
    torch_dtype: Any = None,
    device: Any = None,
    prediction_type: str | None = None,
    config_dir: str | Path | None = None,
):
    """A StableDiffusionPipeline or StableDiffusionXLPipeline for `spec` (see resolve_model).

    Always offline; no safety checker. `torch_dtype` is a torch.dtype or "fp32"/"fp16"/"bf16".
    `prediction_type` overrides the detected one (set on the scheduler). `config_dir` replaces
    the shipped config folder for single-file checkpoints (a folder of JSON configs + tokenizer
    files matching the checkpoint's architecture).
    """
    torch_dtype = as_torch_dtype(torch_dtype)
    source, state_dict = _resolve(spec, prediction_type)  # a pickle is read only once
    if source.path.is_file():
        from lora_studio.core.models.single_file import load_single_file_pipeline

        pipe = load_single_file_pipeline(
            source.path, source.arch, source.prediction_type, config_dir=config_dir,
            torch_dtype=torch_dtype, state_dict=state_dict)
    else:
        pipe = _load_folder(source, torch_dtype)
    if device is not None:
        pipe.to(device)
    pipe.model_source = source  # what was loaded, for PNG info / metadata (ss_sd_model_name)
    logger.info("Loaded %s (%s, %s, %s)", source.name, source.kind, source.arch,
                source.prediction_type)
    return pipe


@dataclass
class ModelComponents:
    """The parts a trainer needs. `text_encoder_2` / `tokenizer_2` are None except for SDXL."""

    source: ModelSource
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    scheduler_config: dict[str, Any] | None = None  # the pipeline's own (samplers start here)


def load_components(
    spec: str | Path | ModelSource | None,
    *,
    torch_dtype: Any = None,
    device: Any = None,
    prediction_type: str | None = None,
    config_dir: str | Path | None = None,
) -> ModelComponents:
    """`load_pipeline` split into parts, with a DDPMScheduler (training noise schedule) built
    from the model's scheduler config and prediction type."""
    from diffusers import DDPMScheduler

    pipe = load_pipeline(spec, torch_dtype=torch_dtype, device=device,
                         prediction_type=prediction_type, config_dir=config_dir)
    source: ModelSource = pipe.model_source
    noise_scheduler = DDPMScheduler.from_config(
        pipe.scheduler.config, prediction_type=source.prediction_type, clip_sample=False)
    return ModelComponents(
        source=source, unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer, noise_scheduler=noise_scheduler,
        text_encoder_2=getattr(pipe, "text_encoder_2", None),
        tokenizer_2=getattr(pipe, "tokenizer_2", None),
        scheduler_config=dict(pipe.scheduler.config),
    )
