"""Training metadata in the keys other tools read (REFERENCE §3): kohya `ss_*` (A1111's LoRA
cards, tag lists, hashes) and Stability ModelSpec 1.0 `modelspec.*`. Every value is a string."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BASE_MODEL_VERSIONS = ("sd_v1", "sd_v2", "sd_v2_v", "sdxl_base_v1-0")
_MODELSPEC_ARCH = {
    "sd_v1": "stable-diffusion-v1/lora",
    "sd_v2": "stable-diffusion-v2-512/lora",
    "sd_v2_v": "stable-diffusion-v2-768-v/lora",
    "sdxl_base_v1-0": "stable-diffusion-xl-v1-base/lora",
}
_SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


def _size(resolution: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        return resolution, resolution
    width, height = resolution
    return int(width), int(height)


def _dataset_dirs(dataset_dirs: Any, num_train_images: int) -> dict[str, dict]:
    """kohya's form: {folder name: {"n_repeats": n, "img_count": n}}."""
    if isinstance(dataset_dirs, dict):
        return {str(k): v for k, v in dataset_dirs.items()}
    dirs = [str(d) for d in (dataset_dirs or [])]
    count = num_train_images if len(dirs) == 1 else 0
    return {Path(d).name or d: {"n_repeats": 1, "img_count": count} for d in dirs}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).replace(microsecond=0).isoformat()


def build_training_metadata(
    *,
    network_dim: int,
    network_alpha: float,
    base_model_version: str,
    base_model_name: str,
    resolution: int | tuple[int, int],
    steps: int,
    epochs: int,
    learning_rate: float,
    unet_lr: float | None,
    text_encoder_lr: float | None,
    optimizer: str,
    lr_scheduler: str,
    seed: int,
    num_train_images: int,
    tag_frequency: dict[str, dict[str, int]],
    dataset_dirs: list[str] | dict[str, dict],
    noise_offset: float | None,
    min_snr_gamma: float | None,
    mixed_precision: str,
    training_started_at: float,
    training_finished_at: float,
    title: str,
    trigger_phrase: str,
    comment: str = "",
    base_model_hash: str = "",
    clip_skip: int | None = None,
    network_args: dict[str, Any] | None = None,
    prediction_type: str | None = None,
    num_reg_images: int = 0,
    reg_dataset_dirs: dict[str, dict] | None = None,
    prior_loss_weight: float = 1.0,
    dataset_settings: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The `ss_*` and `modelspec.*` metadata of a trained LoRA, all values strings.
    `prediction_type` ("epsilon" | "v") defaults to what `base_model_version` implies.
    `dataset_settings` are kohya's per-dataset keys without `ss_` (enable_bucket,
    bucket_info, keep_tokens, ...): a dict or list value is written as JSON, None as "None"
    (kohya's own way of writing an unset value)."""
    if base_model_version not in BASE_MODEL_VERSIONS:
        raise ValueError(f"base_model_version must be one of {BASE_MODEL_VERSIONS}, "
                         f"not {base_model_version!r}")
    width, height = _size(resolution)
    sdxl = base_model_version.startswith("sdxl")
    v2 = base_model_version.startswith("sd_v2")
    meta: dict[str, Any] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": network_dim,
        "ss_network_alpha": float(network_alpha),
        "ss_network_args": json.dumps(network_args or {}),
        "ss_base_model_version": base_model_version,
        "ss_v2": v2,
        "ss_output_name": title,
        "ss_sd_model_name": base_model_name,
        "ss_sd_model_hash": base_model_hash,
        "ss_resolution": f"({width}, {height})",
        "ss_num_train_images": num_train_images,
        "ss_tag_frequency": json.dumps(tag_frequency, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(_dataset_dirs(dataset_dirs, num_train_images),
                                      ensure_ascii=False),
        "ss_num_reg_images": num_reg_images,
        "ss_reg_dataset_dirs": json.dumps(reg_dataset_dirs or {}, ensure_ascii=False),
        "ss_prior_loss_weight": float(prior_loss_weight),
        "ss_learning_rate": learning_rate,
        "ss_unet_lr": unet_lr,
        "ss_text_encoder_lr": text_encoder_lr,
        "ss_optimizer": optimizer,
        "ss_lr_scheduler": lr_scheduler,
        "ss_epoch": epochs,
        "ss_num_epochs": epochs,
        "ss_steps": steps,
        "ss_max_train_steps": steps,
        "ss_seed": seed,
        "ss_noise_offset": noise_offset,
        "ss_min_snr_gamma": min_snr_gamma,
        "ss_mixed_precision": mixed_precision,
        "ss_clip_skip": clip_skip,
        "ss_training_started_at": training_started_at,
        "ss_training_finished_at": training_finished_at,
        "ss_training_comment": comment,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": _MODELSPEC_ARCH[base_model_version],
        "modelspec.implementation": _SGM_IMPLEMENTATION if sdxl else "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": _iso(training_finished_at),
        "modelspec.trigger_phrase": trigger_phrase,
        "modelspec.prediction_type": prediction_type
        or ("v" if base_model_version == "sd_v2_v" else "epsilon"),
    }
    for key, value in (dataset_settings or {}).items():
        meta[f"ss_{key}"] = json.dumps(value, ensure_ascii=False) \
            if isinstance(value, (dict, list)) else value
    if comment:
        meta["modelspec.description"] = comment
    return {key: str(value) for key, value in meta.items()}
