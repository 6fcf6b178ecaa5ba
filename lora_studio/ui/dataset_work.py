"""The Dataset tab's work outside the GUI thread, and its edits of a checked report: Qt-free
functions over `core.dataset` (the check and plan, token counts, what the model sees) that the
`DatasetSession` runs in its pools, and the in-place updates of a report after a caption or the
default caption changed (so a saved caption needs no new check of every image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_studio.core.dataset.checks import fallback_caption, refresh_caption_warnings
from lora_studio.core.dataset.plan import (
    DatasetPlan,
    check_from_config,
    long_captions,
    plan_from_config,
)
from lora_studio.core.dataset.scan import (
    CAPTION_FILE,
    EMPTY_CAPTION_FILE,
    DatasetItem,
    DatasetReport,
)
from lora_studio.core.train.config import TrainConfig

PREVIEW_SIDE = 768  # the original with its crop drawn is shrunk to this in the pool


@dataclass
class SeenPreview:
    """What the model sees of one image, as PIL images and text (made in the pool)."""

    image_path: Path
    pixels: Any  # PIL image at the bucket size: exactly what training encodes
    original: Any  # PIL image: the original (shrunk) with the crop drawn
    bucket: tuple[int, int]
    original_size: tuple[int, int]
    kept_share: float
    upscaled: bool
    flip: bool
    epoch: int
    caption: str  # after the caption options (prefix / suffix, shuffle, dropouts)
    cut_at: int | None  # its first character the text encoder does not read
    tokens: int
    kept: int
    limit: int  # tokens the text encoder reads (max_token_length)

    @property
    def read_caption(self) -> str:
        return self.caption if self.cut_at is None else self.caption[:self.cut_at]

    @property
    def cut_caption(self) -> str:
        return "" if self.cut_at is None else self.caption[self.cut_at:]


def load_tokenizer():
    """`caption_tokenizer()` (safe from any pool thread)."""
    from lora_studio.core.dataset.captions import caption_tokenizer

    return caption_tokenizer()


def check_and_plan(cfg: TrainConfig) -> tuple[DatasetReport, DatasetPlan]:
    """The report and plan of `cfg`'s dataset, tokens not yet counted (runs in the pool)."""
    report = check_from_config(cfg)
    return report, plan_from_config(cfg, report=report, check_captions=False)


def count_long_captions(report: DatasetReport, cfg: TrainConfig) -> list:
    """The plan's `long_captions` of `report` with `cfg`'s token window (runs in the pool)."""
    d = cfg.dataset
    return long_captions(report.items, d.max_token_length, load_tokenizer(), d.caption_prefix,
                         d.caption_suffix)


def measure_caption(text: str, cfg: TrainConfig):
    """The `CaptionWindow` of `text` as training reads it (prefix and suffix joined)."""
    from lora_studio.core.dataset.captions import caption_window

    d = cfg.dataset
    joined = " ".join(t for t in (d.caption_prefix, text, d.caption_suffix) if t)
    return caption_window(load_tokenizer(), joined, d.max_token_length)


def preview_of(plan: DatasetPlan, cfg: TrainConfig, image: Path) -> SeenPreview | None:
    """What training makes of `image` in epoch 1 (runs in the pool); None when not trained."""
    from lora_studio.core.dataset.preview import seen_samples_from_config

    load_tokenizer()  # seen_samples counts the caption's tokens
    samples = seen_samples_from_config(cfg, epoch=0, images=[image], plan=plan)
    if not samples:
        return None
    s = samples[0]
    shown = s.original_with_crop()
    shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return SeenPreview(s.image_path, s.pixels, shown, s.fit.bucket, s.fit.original,
                       s.fit.kept_share, s.fit.upscaled, s.flip, s.epoch, s.caption,
                       s.window.cut_at, s.window.tokens, s.window.kept, s.window.limit)


def apply_fallbacks(report: DatasetReport, default_caption: str, trigger_word: str) -> None:
    """Caption the images without a caption file again, as `check_dataset` does (folder default
    caption, kohya class, default caption, trigger word), after the default caption changed."""
    report.default_caption = default_caption.strip()
    for item in report.items:
        if item.caption_path is not None:
            continue
        subset = report.subsets[item.subset]
        item.caption, item.caption_source = fallback_caption(
            subset.default_caption, subset.kohya_class, default_caption, trigger_word)
    refresh_caption_warnings(report)


def record_saved_caption(report: DatasetReport, item: DatasetItem, text: str,
                         path: Path) -> None:
    """`item`'s caption is now the file `path` holding `text` ("" is an empty caption)."""
    stale = f"{path.name} is not UTF-8"
    report.warnings = [w for w in report.warnings if not w.startswith(stale)]
    item.caption, item.caption_path = text, path
    item.caption_source = CAPTION_FILE if text else EMPTY_CAPTION_FILE
    if item.image_path in report.missing_captions:
        report.missing_captions.remove(item.image_path)
    refresh_caption_warnings(report)


# ------------------------------------------------------------------ doctor and tag tools
TAG_OPERATIONS = ("add", "remove", "replace", "trigger", "missing")


def run_doctor(cfg: TrainConfig):
    """The dataset doctor's report of `cfg`'s dataset (runs in the pool)."""
    from lora_studio.core.dataset.doctor import doctor_from_config

    load_tokenizer()  # the long-caption findings count tokens
    return doctor_from_config(cfg)


def tag_edit(targets: list, operation: str, text: str, other: str = "") -> list:
    """Plan and write one tag edit over `targets` (runs in the pool): the `CaptionChange`s
    written, or for "missing" the targets whose caption lacks the tag (nothing written)."""
    from lora_studio.core.dataset import tags

    if operation == "missing":
        return tags.missing_tag(targets, text)
    changes = {"add": lambda: tags.add_tag(targets, text, where_missing=True),
               "remove": lambda: tags.remove_tag(targets, text),
               "replace": lambda: tags.replace_tag(targets, text, other),
               "trigger": lambda: tags.add_trigger(targets, text)}[operation]()
    tags.apply_changes(changes)
    return changes


def undo_tag_edit(changes: list) -> list:
    """Put back the files of an applied edit, exactly (runs in the pool)."""
    from lora_studio.core.dataset import tags

    tags.undo(changes)
    return changes


@dataclass
class CaptionsBefore:
    """What a report said of the captions a tag edit changed (to undo the edit in place)."""

    items: dict[Path, tuple[str, Path | None, str]]  # image: (caption, caption file, source)
    warnings: list[str]
    warning_lines: list[str]
    missing: list[Path]


def record_tag_changes(report: DatasetReport, changes: list) -> CaptionsBefore:
    """Update `report` in place after `changes` were written (as a caption save does, for each
    changed file); returns what it said before, for `restore_captions`."""
    before = CaptionsBefore({}, list(report.warnings), list(report.caption_warning_lines),
                            list(report.missing_captions))
    items = {item.image_path: item for item in report.items}
    for change in changes:
        item = items.get(change.image_path)
        if item is not None:
            before.items[item.image_path] = (item.caption, item.caption_path,
                                             item.caption_source)
            record_saved_caption(report, item, change.new_text, change.path)
    return before


def restore_captions(report: DatasetReport, before: CaptionsBefore) -> None:
    """Undo `record_tag_changes` in place, once the files are put back."""
    for item in report.items:
        if item.image_path in before.items:
            item.caption, item.caption_path, item.caption_source = before.items[item.image_path]
    report.warnings, report.caption_warning_lines = list(before.warnings), \
        list(before.warning_lines)
    report.missing_captions[:] = before.missing
    refresh_caption_warnings(report)
