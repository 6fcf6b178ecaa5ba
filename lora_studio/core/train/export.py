"""What a trained LoRA file says about its training: kohya's `ss_*` and ModelSpec metadata."""

from __future__ import annotations

import time
from typing import Any

from lora_studio.core.train.config import TrainConfig


def training_metadata(cfg: TrainConfig, dataset, *, arch: str, base_model_name: str, step: int,
                      epochs: int, started_at: float) -> dict[str, str]:
    """The metadata of the LoRA written at `step` of a run on `dataset` (a TrainingSet) for a
    base model of architecture `arch`."""
    from lora_studio.core.dataset.scan import tag_frequency
    from lora_studio.core.lora.metadata import build_training_metadata
    from lora_studio.core.models.architecture import base_model_version

    d, lo, tr = cfg.dataset, cfg.lora, cfg.train
    caption_sets = captions_by_folder(dataset.plan.report)
    reg = dataset.reg
    return build_training_metadata(
        network_dim=lo.rank, network_alpha=lo.alpha,
        base_model_version=base_model_version(arch), base_model_name=base_model_name,
        resolution=d.resolution, steps=step, epochs=epochs,
        learning_rate=tr.learning_rate, unet_lr=tr.learning_rate,
        text_encoder_lr=(lo.text_encoder_lr or tr.learning_rate) if lo.train_text_encoder
        else None,
        optimizer=tr.optimizer, lr_scheduler=tr.lr_scheduler, seed=tr.seed,
        num_train_images=dataset.num_train_images,
        tag_frequency={name: tag_frequency(c) for name, (_, c) in caption_sets.items()},
        dataset_dirs={name: dirs for name, (dirs, _) in caption_sets.items()},
        num_reg_images=len(reg.examples) if reg else 0,
        reg_dataset_dirs=reg.folders if reg else {},
        prior_loss_weight=tr.prior_loss_weight,
        noise_offset=tr.noise_offset, min_snr_gamma=tr.min_snr_gamma,
        mixed_precision=tr.mixed_precision, training_started_at=started_at,
        training_finished_at=time.time(), title=cfg.output.name,
        trigger_phrase=cfg.trigger_phrase(),
        dataset_settings=dataset_metadata(cfg, dataset.plan))


def captions_by_folder(report) -> dict[str, tuple[dict[str, int], list[str]]]:
    """kohya's ss_dataset_dirs entry and the captions of each dataset folder, by folder name."""
    folders: dict[str, tuple[dict[str, int], list[str]]] = {}
    for subset in report.subsets:
        dirs, _ = folders.setdefault(subset.path.name, ({"n_repeats": subset.repeats,
                                                         "img_count": 0}, []))
        dirs["img_count"] += subset.images
    for item in report.items:
        folders[report.subsets[item.subset].path.name][1].append(item.caption)
    return folders


def dataset_metadata(cfg: TrainConfig, plan) -> dict[str, Any]:
    """kohya's per-dataset ss_* keys: buckets, caption options, token length."""
    from lora_studio.core.dataset.plan import ss_bucket_metadata

    d = cfg.dataset
    return {**ss_bucket_metadata(plan), "max_token_length": d.max_token_length,
            "shuffle_caption": d.shuffle_caption, "keep_tokens": d.keep_tokens,
            "keep_tokens_separator": d.keep_tokens_separator,
            "caption_dropout_rate": d.caption_dropout_rate,
            "caption_tag_dropout_rate": d.caption_tag_dropout_rate,
            "caption_prefix": d.caption_prefix or None, "caption_suffix": d.caption_suffix or None,
            "random_crop": not d.center_crop, "flip_aug": d.random_flip,
            "batch_size_per_device": cfg.train.batch_size,
            "max_train_epochs": cfg.train.max_train_epochs or None}
