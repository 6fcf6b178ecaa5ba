"""Rank and steps advice before Start, from the dataset's size, the kind of concept and the base.

`advise(images, concept, arch, ...)` returns an `Advice`: the advised settings by dotted config
key (`{"lora.rank": 8, "lora.alpha": 8.0, "train.steps": 2000, "train.max_train_epochs": 0}`)
and a `Reason` for each step of the way: the rule, the number it gives for this dataset, and
the tags of where the rule comes from (`SOURCES`; the README's "Rank and steps advisor" says
more). `Advice.apply(cfg)` is the one-click apply: a copy of the config with the values set.
Pure and deterministic (no files, no torch); `lora-studio advise DIR` and the Train tab's advice
panel show the same advice.

The rules, in the order they are applied:
  rank   the kind's band: style 4-8, subject 8-16, concept 16-32 [community]; its low end under
         200 images, its high end from 200 [studio]; at most 8 under 100 images [community,
         hu2021]; not raised for SDXL, whose LoRA holds ~7x the parameters at the same rank
         [measured, holostrawberry].
  alpha  alpha = rank: an update scale alpha / rank of 1 [hu2021, diffusers].
  steps  ~100 views of each image [dreambooth-ext], kept within the kind's window of images
         seen in all (subject 1500-3000, style and concept 2000-4000) [holostrawberry,
         community], and at least 10 passes over every image [holostrawberry]; turned into
         steps (or epochs) the kohya way, images x repeats x epochs / batch size, with
         regularization images doubling an epoch [kohya].
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from lora_studio.core.errors import StudioError
from lora_studio.core.models.architecture import ARCHITECTURES, architecture
from lora_studio.core.train.config import SECTIONS, TrainConfig
from lora_studio.core.train.presets import get_value, set_value

CONCEPTS = ("style", "subject", "concept")
CONCEPT_LABELS = {"style": "Style", "subject": "Subject", "concept": "Concept"}
CONCEPT_HELP = {
    "style": "a look: a medium, an artist's hand, a colour grade, a lighting",
    "subject": "one person, character, animal or object",
    "concept": "a bigger shift: a pose, an action, a composition, an idea the base model lacks",
}
CONCEPT_ALIASES = {"character": "subject", "person": "subject", "object": "subject",
                   "pose": "concept"}

RANK_BANDS = {"style": (4, 8), "subject": (8, 16), "concept": (16, 32)}
HIGH_END_FROM = 200  # images from which the band's high end is advised [studio]
SMALL_DATASET = 100  # under this many images ...
SMALL_RANK_CAP = 8  # ... the rank is at most this
VIEWS_PER_IMAGE = 100
SEEN_WINDOWS = {"style": (2000, 4000), "subject": (1500, 3000), "concept": (2000, 4000)}
MIN_PASSES = 10
# LoRA parameters per unit of rank on the UNet's attention projections (to_q, to_k, to_v,
# to_out.0), counted from the shipped resources/configs/{sd15,sdxl}/unet/config.json: 199,296
# for SD 1.x (207,488 for SD 2.x), 1,451,520 for SDXL (560 projections against 128).
SDXL_PARAMS_PER_RANK_RATIO = 1_451_520 / 199_296

SOURCES = {
    "hu2021": "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models "
              "(arXiv:2106.09685)",
    "diffusers": "huggingface/diffusers, examples/text_to_image/train_text_to_image_lora.py",
    "kohya": "kohya-ss/sd-scripts, how it counts steps from images, repeats and epochs",
    "holostrawberry": "hollowstrawberry/kohya-colab, Lora_Trainer(_XL).ipynb",
    "dreambooth-ext": "d8ahazard/sd_dreambooth_extension, \"Training Steps Per Image\"",
    "community": "a community rule of thumb (LoRA training guides), not a measured result",
    "measured": "counted by LoRA Studio from the shipped model configs",
    "studio": "LoRA Studio's own choice",
}


@dataclass(frozen=True)
class Reason:
    """One rule: what it says, what it gives for this dataset, and where it comes from."""

    topic: str  # "rank" | "alpha" | "steps"
    rule: str
    result: str
    sources: tuple[str, ...]

    def text(self) -> str:
        return f"{self.rule} -> {self.result} [{', '.join(self.sources)}]"


@dataclass
class Advice:
    """Advised settings (dotted config key -> value) and the reasons for them."""

    concept: str
    arch: str
    images: int
    images_per_epoch: int
    images_seen: int
    values: dict[str, Any]
    reasons: list[Reason] = field(default_factory=list)

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        """A copy of `cfg` with the advised values set (`cfg` itself is left alone)."""
        out = copy.deepcopy(cfg)
        for key, value in self.values.items():
            set_value(out, key, value)
        return out

    def changes(self, cfg: TrainConfig) -> list[tuple[str, Any, Any]]:
        """(key, value in `cfg`, advised value) of every value that `apply` would change."""
        return [(key, get_value(cfg, key), value) for key, value in self.values.items()
                if get_value(cfg, key) != value]

    def overrides(self) -> list[str]:
        """The values as `--set` arguments: ["lora.rank=8", ...]."""
        return [f"{key}={_plain(value)}" for key, value in self.values.items()]

    def to_toml(self) -> str:
        """The values as TOML sections, to paste into a config."""
        import tomli_w

        sections: dict[str, dict[str, Any]] = {}
        for key, value in self.values.items():
            section, _, name = key.partition(".")
            sections.setdefault(section, {})[name] = value
        return tomli_w.dumps(sections)

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "arch": self.arch, "images": self.images,
                "images_per_epoch": self.images_per_epoch, "images_seen": self.images_seen,
                "values": dict(self.values),
                "reasons": [dataclasses.asdict(r) | {"sources": list(r.sources)}
                            for r in self.reasons]}


def concept_kind(concept: str) -> str:
    """"style", "subject" or "concept" (also from "Style", "character", "person", "pose" ...)."""
    name = (concept or "").strip().lower()
    name = CONCEPT_ALIASES.get(name, name)
    if name not in CONCEPTS:
        raise StudioError(f"Unknown kind of concept {concept!r}.",
                          f"Use one of: {', '.join(CONCEPTS)} (a style; a subject: one person, "
                          "character or object; a concept: a pose, an action, a new idea).")
    return name


def advise(images: int, concept: str, arch: str = "sd1", *, images_per_epoch: int | None = None,
           current: TrainConfig | None = None) -> Advice:
    """Advised rank, alpha and steps for `images` distinct usable images of `concept` on `arch`.

    `images_per_epoch`: images x their folders' repeats (the dataset check's "per epoch"; default
    images x `current.dataset.repeats`). `current`: the config the advice is for; its batch size,
    gradient accumulation, regularization folder and steps-or-epochs choice shape the step count,
    and its alpha / rank is compared with the advised one. Raises StudioError for no images, an
    unknown kind of concept or an unknown architecture."""
    kind = concept_kind(concept)
    if arch not in ARCHITECTURES:
        raise StudioError(f"Unknown base architecture {arch!r}.",
                          f"Use one of: {', '.join(ARCHITECTURES)}.")
    if images < 1:
        raise StudioError("No usable images to advise on.",
                          "Add images to the dataset (`lora-studio dataset check DIR` says which "
                          "were skipped and why).")
    cfg = current if current is not None else TrainConfig()
    per_epoch = max(images_per_epoch or images * cfg.dataset.repeats, 1)
    reasons: list[Reason] = []
    rank = _advise_rank(images, kind, arch, reasons)
    alpha = _advise_alpha(rank, current, reasons)
    seen = _images_seen(images, kind, reasons)
    values = {"lora.rank": rank, "lora.alpha": alpha, **_schedule(seen, per_epoch, cfg, reasons)}
    values = {key: _within_declared(key, value) for key, value in values.items()}
    return Advice(kind, arch, images, per_epoch, seen, values, reasons)


# ----------------------------------------------------------------------------- the rules
def _advise_rank(images: int, kind: str, arch: str, reasons: list[Reason]) -> int:
    low, high = RANK_BANDS[kind]
    rank = high if images >= HIGH_END_FROM else low
    reasons.append(Reason("rank", f"{CONCEPT_LABELS[kind]}: rank {low}-{high}, the low end "
                          f"under {HIGH_END_FROM} images, the high end from {HIGH_END_FROM}",
                          f"{images} images: rank {rank}", ("community", "studio")))
    if images < SMALL_DATASET:
        capped = min(rank, SMALL_RANK_CAP)
        result = (f"rank {capped} (not {rank})" if capped != rank
                  else f"rank {rank} is within it")
        rank = capped
    else:
        result = f"does not apply ({images} images)"
    reasons.append(Reason("rank", f"Under {SMALL_DATASET} images, rank at most {SMALL_RANK_CAP} "
                          "(a small rank suffices; a large one memorises few images)", result,
                          ("community", "hu2021")))
    reasons.append(_arch_reason(arch, rank))
    return rank


def _arch_reason(arch: str, rank: int) -> Reason:
    info = architecture(arch)
    if arch == "sdxl":
        return Reason("rank", f"SDXL: not raised; at the same rank its LoRA holds "
                      f"{SDXL_PARAMS_PER_RANK_RATIO:.1f}x the parameters of an SD 1.x one",
                      f"rank {rank}", ("measured", "holostrawberry"))
    return Reason("rank", f"{info.label}: the bands above are for its UNet's size",
                  f"rank {rank}", ("community",))


def _advise_alpha(rank: int, current: TrainConfig | None, reasons: list[Reason]) -> float:
    alpha = float(rank)
    result = f"alpha {alpha:g} (alpha / rank = 1)"
    if current is not None and current.lora.rank > 0:
        scale = current.lora.alpha / current.lora.rank
        if not math.isclose(scale, 1.0):
            result += (f"; now {scale:.3g}: at the same learning rate, updates "
                       f"{1 / scale:.3g}x as large")
    reasons.append(Reason("alpha", "Alpha = rank: the update is scaled by alpha / rank, and "
                          "rank to 2 x rank is usual", result, ("hu2021", "diffusers")))
    return alpha


def _images_seen(images: int, kind: str, reasons: list[Reason]) -> int:
    views = images * VIEWS_PER_IMAGE
    reasons.append(Reason("steps", f"About {VIEWS_PER_IMAGE} views of each image",
                          f"{images} x {VIEWS_PER_IMAGE} = {views} images seen",
                          ("dreambooth-ext",)))
    low, high = SEEN_WINDOWS[kind]
    windowed = min(max(views, low), high)
    where = ("within it" if windowed == views
             else f"raised to {windowed}" if windowed > views else f"lowered to {windowed}")
    reasons.append(Reason("steps", f"{CONCEPT_LABELS[kind]}: {low}-{high} images seen in all",
                          where, ("holostrawberry", "community")))
    passes = images * MIN_PASSES
    seen = max(windowed, passes)
    reasons.append(Reason("steps", f"At least {MIN_PASSES} passes over every image",
                          f"raised to {seen}" if seen > windowed else f"{passes} or more: met",
                          ("holostrawberry",)))
    return seen


def _schedule(seen: int, per_epoch: int, cfg: TrainConfig,
              reasons: list[Reason]) -> dict[str, int]:
    """`train.steps` (with `train.max_train_epochs = 0`), or `train.max_train_epochs` when the
    config trains whole epochs, for `seen` images seen."""
    epochs = seen / per_epoch
    if cfg.train.max_train_epochs > 0:
        whole = max(1, round(epochs))
        reasons.append(Reason("steps", "Whole epochs (the config trains epochs): images seen / "
                              "images per epoch (images x repeats)",
                              f"{seen} / {per_epoch} = {whole} epochs", ("kohya",)))
        return {"train.max_train_epochs": whole}
    batch = cfg.train.batch_size * cfg.train.gradient_accumulation
    reg = 2 if cfg.dataset.reg_path else 1
    steps = max(1, math.ceil(seen * reg / batch))
    with_reg = " x 2 for the regularization images" if reg == 2 else ""
    reasons.append(Reason("steps", "Steps = images x repeats x epochs / batch size",
                          f"{seen} images seen = {epochs:.1f} epochs of {per_epoch} images; "
                          f"{seen} / batch {batch}{with_reg} = {steps} steps", ("kohya",)))
    return {"train.steps": steps, "train.max_train_epochs": 0}


def _declared(key: str) -> dataclasses.Field:
    section, _, name = key.partition(".")
    return next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name)


def _within_declared(key: str, value: Any) -> Any:
    """`value` kept within the range the config declares for `key`."""
    meta = _declared(key).metadata
    if meta.get("minimum") is not None:
        value = max(value, type(value)(meta["minimum"]))
    if meta.get("maximum") is not None:
        value = min(value, type(value)(meta["maximum"]))
    return value


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- text
def label_of(key: str) -> str:
    """The Train form's name of a setting ("lora.rank" -> "Rank")."""
    return _declared(key).metadata.get("label", key)


def value_rows(advice: Advice, current: TrainConfig | None = None
               ) -> list[tuple[str, str | None, str]]:
    """(label, current value or None, advised value) of each advised setting, as text; the
    epochs-off switch that goes with advised steps is left out unless it changes."""
    rows = []
    for key, value in advice.values.items():
        now = get_value(current, key) if current is not None else None
        if key == "train.max_train_epochs" and "train.steps" in advice.values and not now:
            continue
        rows.append((label_of(key), None if now is None else _plain(now), _plain(value)))
    return rows


def format_advice(advice: Advice, current: TrainConfig | None = None) -> str:
    """The advice as text: the values (with the current ones, given `current`), then why."""
    label = architecture(advice.arch).label
    lines = [f"Advice for a {advice.concept} LoRA on {label}: {advice.images} images, "
             f"{advice.images_per_epoch} per epoch with repeats"]
    for name, now, value in value_rows(advice, current):
        change = "" if now is None else (f"  (now {now})" if now != value else "  (as now)")
        lines.append(f"  {name}: {value}{change}")
    lines.append("Why:")
    lines += [f"  - {reason.text()}" for reason in advice.reasons]
    used = dict.fromkeys(tag for reason in advice.reasons for tag in reason.sources)
    lines.append("Sources:")
    lines += [f"  [{tag}] {SOURCES[tag]}" for tag in used]
    return "\n".join(lines)


__all__ = ["CONCEPTS", "CONCEPT_HELP", "CONCEPT_LABELS", "SOURCES", "Advice", "Reason",
           "advise", "concept_kind", "format_advice", "label_of", "value_rows"]
