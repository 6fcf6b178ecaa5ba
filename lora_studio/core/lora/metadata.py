"""Training metadata in the keys other tools read (REFERENCE §3): kohya `ss_*` (A1111's LoRA
cards, tag lists, hashes) and Stability ModelSpec 1.0 `modelspec.*`. Every value is a string."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lora_studio.core.models.architecture import (
    Architecture,
    arch_of_base_model_version,
    arch_of_modelspec,
    architecture,
    architectures,
)

logger = logging.getLogger(__name__)

BASE_MODEL_VERSIONS = tuple(a.base_model_version for a in architectures())


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
    arch = architecture(arch_of_base_model_version(base_model_version))
    meta: dict[str, Any] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": network_dim,
        "ss_network_alpha": float(network_alpha),
        "ss_network_args": json.dumps(network_args or {}),
        "ss_base_model_version": base_model_version,
        "ss_v2": arch.is_v2,
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
        "modelspec.architecture": arch.modelspec_lora,
        "modelspec.implementation": arch.lora_implementation,
        "modelspec.title": title,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": _iso(training_finished_at),
        "modelspec.trigger_phrase": trigger_phrase,
        "modelspec.prediction_type": prediction_type or _spec_prediction(arch),
    }
    for key, value in (dataset_settings or {}).items():
        meta[f"ss_{key}"] = json.dumps(value, ensure_ascii=False) \
            if isinstance(value, (dict, list)) else value
    if comment:
        meta["modelspec.description"] = comment
    return {key: str(value) for key, value in meta.items()}


# ------------------------------------------------------- keys every exported LoRA carries
def _spec_prediction(arch: Architecture) -> str:
    """ModelSpec's spelling of the prediction type: "v" or "epsilon"."""
    return "v" if arch.prediction_type == "v_prediction" else "epsilon"


def _says_v_prediction(metadata: Mapping[str, str]) -> bool:
    spec = str(metadata.get("modelspec.prediction_type", "")).strip().lower()
    return (spec.replace("-", "_") in ("v", "v_prediction", "vpred", "v_pred")
            or metadata.get("ss_v_parameterization") == "True")


def stated_architecture(metadata: Mapping[str, str], arch: str | None = None
                        ) -> Architecture | None:
    """The architecture `metadata` names (`ss_base_model_version`, else
    `modelspec.architecture`), else `arch` (an architecture or a LoRA family such as
    LoraFile.arch); an "sd2" LoRA whose metadata says v-prediction is "sd2-v". None: unknown."""
    name = (arch_of_base_model_version(metadata.get("ss_base_model_version"))
            or arch_of_modelspec(metadata.get("modelspec.architecture")))
    if name is None:
        name = "sd2-v" if arch == "sd2" and _says_v_prediction(metadata) else arch
    if name is None:
        return None
    try:
        return architecture(name)
    except ValueError:
        return None


def with_architecture_keys(metadata: Mapping[str, str], arch: str | None) -> dict[str, str]:
    """`metadata` plus the keys other tools read to tell which model a LoRA is for (A1111
    files a LoRA without them as SD 1.x and hides it next to an SDXL checkpoint): kohya's
    `ss_base_model_version` / `ss_v2` and ModelSpec's `modelspec.architecture` (with
    `sai_model_spec` and `implementation`). Only missing (or blank) keys are added, never a
    value the metadata states; nothing is added when the architecture is not known."""
    meta = {str(k): str(v) for k, v in metadata.items()}
    found = stated_architecture(meta, arch)
    if found is None:
        return meta
    for key, value in (("ss_base_model_version", found.base_model_version),
                       ("ss_v2", str(found.is_v2)),
                       ("modelspec.sai_model_spec", "1.0.0"),
                       ("modelspec.architecture", found.modelspec_lora),
                       ("modelspec.implementation", found.lora_implementation)):
        if not meta.get(key, "").strip():
            meta[key] = value
    return meta


# ------------------------------------------------------------------------ merged metadata
def _tag_frequency(metadata: Mapping[str, str]) -> dict[str, dict] | None:
    raw = metadata.get("ss_tag_frequency")
    if not raw:
        return None
    try:
        frequency = json.loads(raw)
    except json.JSONDecodeError:
        logger.warning("Ignoring ss_tag_frequency that is not JSON: %.60r", raw)
        return None
    return frequency if isinstance(frequency, dict) else None


def merged_tag_frequency(metadatas: Iterable[Mapping[str, str]]) -> str | None:
    """The inputs' `ss_tag_frequency` ({folder: {tag: count}}) as one, in JSON: every folder
    of every input, the counts of a folder name found in several inputs added up. None when no
    input has any."""
    merged: dict[str, dict[str, int]] = {}
    found = False
    for metadata in metadatas:
        frequency = _tag_frequency(metadata)
        if frequency is None:
            continue
        found = True
        for folder, tags in frequency.items():
            counts = merged.setdefault(str(folder), {})
            for tag, count in (tags.items() if isinstance(tags, dict) else ()):
                try:
                    counts[str(tag)] = counts.get(str(tag), 0) + int(count)
                except (TypeError, ValueError):
                    continue
    return json.dumps(merged, ensure_ascii=False) if found else None


def merged_trigger_phrase(metadatas: Iterable[Mapping[str, str]]) -> str | None:
    """Every input's `modelspec.trigger_phrase` phrases (comma-separated), each once, in the
    order they first appear; None when no input has one."""
    phrases: list[str] = []
    for metadata in metadatas:
        for phrase in str(metadata.get("modelspec.trigger_phrase") or "").split(","):
            phrase = phrase.strip()
            if phrase and phrase not in phrases:
                phrases.append(phrase)
    return ", ".join(phrases) or None
