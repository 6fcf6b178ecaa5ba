"""What training will do with a dataset: its folders, buckets, epochs and long captions.

`plan_dataset` is the one place that turns a checked dataset and the training settings into
what a run does: which bucket each image trains at, how many batches and optimizer steps an
epoch has (counted by the same `DataOrder` the trainer draws batches from), how many steps the
run has (`train.steps`, or `train.max_train_epochs` epochs), which images are upscaled into their
bucket and which captions are longer than the text encoder reads. `lora-studio dataset check`,
the Dataset tab and the trainer all print it, so they cannot disagree. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lora_studio.core.dataset.buckets import (
    BucketFit,
    BucketSettings,
    bucket_info,
    bucket_resolutions,
    fit_bucket,
    format_bucket_table,
)
from lora_studio.core.dataset.checks import check_dataset, format_report, min_image_side
from lora_studio.core.dataset.order import DataOrder, Example
from lora_studio.core.dataset.scan import DatasetItem, DatasetReport


@dataclass
class LongCaption:
    item: DatasetItem
    tokens: int
    kept: int
    first_dropped_tag: str | None


@dataclass
class DatasetPlan:
    """A checked dataset and what a run with these settings does with it."""

    report: DatasetReport
    settings: BucketSettings
    fits: list[BucketFit]  # parallel to report.items
    batch_size: int
    batches_per_epoch: int
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    reg_images: int = 0
    long_captions: list[LongCaption] = field(default_factory=list)
    max_token_length: int = 75

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch if self.steps_per_epoch else 0.0

    def bucket_rows(self) -> list[tuple[tuple[int, int], int, int]]:
        """(bucket (w, h), images in it, dataset samples per epoch), smallest first."""
        counts: dict[tuple[int, int], list[int]] = {}
        for item, fit in zip(self.report.items, self.fits):
            row = counts.setdefault(fit.bucket, [0, 0])
            row[0] += 1
            row[1] += item.repeats
        return [(bucket, n, per_epoch) for bucket, (n, per_epoch) in sorted(counts.items())]

    def upscaled(self) -> list[tuple[DatasetItem, BucketFit]]:
        return [(item, fit) for item, fit in zip(self.report.items, self.fits) if fit.upscaled]

    def examples(self) -> list[Example]:
        """The dataset's images as training examples (dataset index = report order)."""
        return [Example(i, item.image_path, item.caption, item.repeats, bucket=fit.bucket,
                        subset=item.subset)
                for i, (item, fit) in enumerate(zip(self.report.items, self.fits))]

    def to_dict(self) -> dict[str, Any]:
        out = self.report.to_dict()
        out["training"] = {
            "enable_bucket": self.settings.enabled,
            "buckets": [{"resolution": list(b), "count": n, "per_epoch": e}
                        for b, n, e in self.bucket_rows()],
            "batch_size": self.batch_size, "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "epochs": round(self.epochs, 2), "regularization_images": self.reg_images,
            "upscaled": [{"image": str(i.image_path), "size": list(f.original),
                          "bucket": list(f.bucket)} for i, f in self.upscaled()],
            "long_captions": [{"image": str(c.item.image_path), "tokens": c.tokens,
                               "kept": c.kept, "first_dropped_tag": c.first_dropped_tag}
                              for c in self.long_captions],
        }
        return out


def fit_items(items: Sequence[DatasetItem], settings: BucketSettings) -> list[BucketFit]:
    """The bucket of every image (kohya's nearest aspect ratio, or its own with no_upscale)."""
    table = None if settings.no_upscale or not settings.enabled else bucket_resolutions(settings)
    return [fit_bucket(item.size[0], item.size[1], settings, table) for item in items]


def count_steps(examples: Sequence[Example], *, batch_size: int, gradient_accumulation: int,
                processes: int, seed: int) -> tuple[int, int]:
    """(batches, optimizer steps) of the first epoch, drawn as the trainer draws them."""
    order = DataOrder(examples, batch_size=batch_size, seed=seed, random_flip=False)
    batches = order.batches_in_epoch(0)
    return batches, math.ceil(batches / (gradient_accumulation * processes))


def long_captions(items: Sequence[DatasetItem], max_token_length: int, tokenizer=None,
                  prefix: str = "", suffix: str = "") -> list[LongCaption]:
    """Captions (with the prefix and suffix) longer than the text encoder reads."""
    from lora_studio.core.dataset.captions import caption_tokenizer, caption_window

    tokenizer = tokenizer or caption_tokenizer()
    found = []
    for item in items:
        text = " ".join(t for t in (prefix, item.caption, suffix) if t)
        window = caption_window(tokenizer, text, max_token_length)
        if window.cut:
            found.append(LongCaption(item, window.tokens, window.kept, window.first_dropped_tag))
    return found


def plan_dataset(report: DatasetReport, *, settings: BucketSettings, batch_size: int = 1,
                 gradient_accumulation: int = 1, processes: int = 1, steps: int = 1000,
                 max_train_epochs: int = 0, seed: int = 42,
                 reg_examples: Sequence[Example] = (), max_token_length: int = 75,
                 caption_prefix: str = "", caption_suffix: str = "",
                 tokenizer=None, check_captions: bool = True) -> DatasetPlan:
    """What a run with these settings does with `report`'s images (see the module text)."""
    fits = fit_items(report.items, settings)
    plan = DatasetPlan(report, settings, fits, batch_size, 0, 0, 0, reg_images=len(reg_examples),
                       max_token_length=max_token_length)
    if report.items:
        examples = plan.examples() + list(reg_examples)
        plan.batches_per_epoch, plan.steps_per_epoch = count_steps(
            examples, batch_size=batch_size, gradient_accumulation=gradient_accumulation,
            processes=processes, seed=seed)
        plan.total_steps = max_train_epochs * plan.steps_per_epoch if max_train_epochs \
            else steps
    if check_captions and report.items:
        plan.long_captions = long_captions(report.items, max_token_length, tokenizer,
                                           caption_prefix, caption_suffix)
    return plan


def check_from_config(cfg, between: Callable[[], None] = lambda: None) -> DatasetReport:
    """`check_dataset` of a TrainConfig's [dataset] (its folder, kohya folder or subsets)."""
    d = cfg.dataset
    return check_dataset(d.path or None, subsets=d.subsets,
                         caption_extension=d.caption_extension,
                         default_caption=d.default_caption, trigger_word=d.trigger_word,
                         repeats=d.repeats, min_size=min_image_side(d.resolution),
                         between=between)


def plan_from_config(cfg, *, report: DatasetReport | None = None,
                     reg_examples: Sequence[Example] = (), processes: int = 1,
                     tokenizer=None, check_captions: bool = True) -> DatasetPlan:
    """Plan `cfg`'s dataset (checked now unless `report` is given) with `cfg`'s settings."""
    d, tr = cfg.dataset, cfg.train
    report = report if report is not None else check_from_config(cfg)
    return plan_dataset(report, settings=cfg.bucket_settings(), batch_size=tr.batch_size,
                        gradient_accumulation=tr.gradient_accumulation, processes=processes,
                        steps=tr.steps, max_train_epochs=tr.max_train_epochs, seed=tr.seed,
                        reg_examples=reg_examples, max_token_length=d.max_token_length,
                        caption_prefix=d.caption_prefix, caption_suffix=d.caption_suffix,
                        tokenizer=tokenizer, check_captions=check_captions)


def format_training(plan: DatasetPlan) -> list[str]:
    """The buckets, the epoch arithmetic, upscaled images and long captions, as text lines."""
    s = plan.settings
    if not plan.report.items:
        return []
    if s.enabled:
        how = ("own size, never enlarged (bucket_no_upscale)" if s.no_upscale else
               f"{s.min_reso}-{s.max_reso} px sides, steps of {s.reso_steps}")
        lines = [f"Buckets (about {s.resolution}x{s.resolution} pixels, {how}):"]
    else:
        why = f" (below one bucket step, {s.reso_steps} px)" if s.resolution < s.reso_steps \
            else ""
        lines = [f"Buckets off{why}: every image trains as a {s.resolution}x{s.resolution} "
                 "crop."]
    lines += format_bucket_table(plan.bucket_rows(), plan.batch_size)
    reg = f" + {plan.reg_images} regularization images" if plan.reg_images else ""
    lines.append(f"Training: {plan.report.images_per_epoch} images per epoch{reg}, batch size "
                 f"{plan.batch_size}: {plan.batches_per_epoch} batches = {plan.steps_per_epoch} "
                 f"steps per epoch; {plan.total_steps} steps = {plan.epochs:.1f} epochs.")
    upscaled = plan.upscaled()
    if upscaled:
        lines.append(f"Upscaled into their bucket ({len(upscaled)}; they look softer than the "
                     "rest: use larger originals, or bucket_no_upscale):")
        lines += [f"  {i.image_path.name}: {f.original[0]}x{f.original[1]} -> bucket "
                  f"{f.bucket[0]}x{f.bucket[1]}" for i, f in upscaled]
    if plan.long_captions:
        lines.append(f"Captions longer than the text encoder reads ({len(plan.long_captions)}; "
                     f"max_token_length {plan.max_token_length}: the rest is cut; 150 or 225 "
                     "reads 2 or 3 windows):")
        lines += [f"  {c.item.image_path.name}: {c.kept} of {c.tokens} tokens kept, cut from "
                  f"\"{c.first_dropped_tag}\"" for c in plan.long_captions]
    return lines


def format_plan(plan: DatasetPlan) -> str:
    """`format_report` followed by what training will do."""
    report_lines = format_report(plan.report).splitlines()
    hint = report_lines.pop()  # the "Ready to train" / "Nothing usable" line ends the text
    return "\n".join(report_lines + format_training(plan) + [hint])


def ss_bucket_metadata(plan: DatasetPlan) -> dict[str, Any]:
    """kohya's bucket metadata values of a run (ss_bucket_info's JSON object included)."""
    s = plan.settings
    return {"enable_bucket": s.enabled, "min_bucket_reso": s.min_reso if s.enabled else None,
            "max_bucket_reso": s.max_reso if s.enabled else None,
            "bucket_no_upscale": s.no_upscale if s.enabled else None,
            # kohya counts an image once per repeat in ss_bucket_info
            "bucket_info": bucket_info(plan.fits, [i.repeats for i in plan.report.items])
            if s.enabled else None}
