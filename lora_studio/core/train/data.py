"""Training data: the pixels and captions of each sample, and the latent / text-embedding cache.

Which images a batch holds is `dataset.order.DataOrder`'s business (a pure function of the seed
and the batch number, batches drawn within aspect-ratio buckets); this module turns a sample into
pixels at its bucket's size and a caption after kohya's caption options, both drawn from the
sample's position, so a resumed run sees exactly what an unbroken run would have seen.

The cache is keyed by *dataset index* (and flip), never by step: a shuffled loader can then never
pair an image's latents with another image's caption (the reference scripts' bug, REFERENCE §5).
It stores the VAE's latent *distribution* (mean and std) of each image once (both flips when
`random_flip` is on) and draws a fresh latent sample from it every step with the trainer's noise
generator, exactly what encoding every step would do, only without running the encoder again.
Text embeddings are cached per caption unless the text encoder is being trained (then they change
every step and are computed in the loop).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lora_studio.core.dataset.buckets import BucketFit, BucketSettings
from lora_studio.core.dataset.captions import CaptionOptions, encode_captions
from lora_studio.core.dataset.order import DataOrder, Example, Sample
from lora_studio.core.dataset.plan import DatasetPlan
from lora_studio.core.dataset.samples import SampleMaker
from lora_studio.core.dataset.transforms import image_to_tensor
from lora_studio.core.train.families.base import Conditioning, SampleGeometry
from lora_studio.core.train.validation import ValidationSet

__all__ = ["DataOrder", "Example", "Sample", "RegularizationSet", "TrainData", "TrainingSet",
           "prepare_training_set",
           "load_regularization", "encode_text", "latent_distribution", "sample_latents",
           "has_trigger", "without_trigger", "trigger_patterns"]


@dataclass
class RegularizationSet:
    """The usable regularization images (as examples) and what a person should hear about."""

    examples: list[Example]
    fits: dict[int, BucketFit]  # by dataset index
    skipped: list[str]  # "name: reason"
    warnings: list[str]
    folders: dict[str, dict[str, int]]  # kohya's ss_reg_dataset_dirs


def load_regularization(folder: str | Path, *, caption_extension: str, min_size: int,
                        trigger: str, first_index: int, settings: BucketSettings,
                        between: Callable[[], None] = lambda: None) -> RegularizationSet:
    """Scan a regularization folder (a plain folder or kohya `N_class/` subfolders) into
    examples with indices from `first_index` on, each at its bucket. An image without a
    caption file is captioned with its folder's class; one with neither is skipped. Raises
    DatasetError when none is usable."""
    from lora_studio.core.dataset.checks import check_dataset
    from lora_studio.core.dataset.plan import fit_items
    from lora_studio.core.errors import DatasetError

    try:
        report = check_dataset(folder, caption_extension=caption_extension, min_size=min_size,
                               warn_uncaptioned=False,  # those are skipped, and listed
                               between=between)
    except DatasetError as exc:  # "Dataset folder ... does not exist": say which folder
        raise DatasetError(f"Regularization images (dataset.reg_path): {exc.what}",
                           exc.fix + " Or leave dataset.reg_path empty.") from exc
    skipped = [f"{s.path.name}: {s.reason}" for s in report.skipped]
    examples: list[Example] = []
    fits: dict[int, BucketFit] = {}
    folders: dict[str, dict[str, int]] = {}
    for item, fit in zip(report.items, fit_items(report.items, settings)):
        if not item.caption:
            skipped.append(f"{item.image_path.name}: no caption file and not in a kohya "
                           f"N_class folder (add {item.image_path.stem}{caption_extension})")
            continue
        index = first_index + len(examples)
        examples.append(Example(index, item.image_path, item.caption, item.repeats,
                                regularization=True, bucket=fit.bucket))
        fits[index] = fit
        entry = folders.setdefault(item.image_path.parent.name,
                                   {"n_repeats": item.repeats, "img_count": 0})
        entry["img_count"] += 1
    if not examples:
        raise DatasetError(f"No usable regularization images in {report.root} "
                           f"({len(skipped)} skipped).",
                           "Add captioned images of what the LoRA should leave alone (a .txt "
                           "beside each, or kohya N_class folders), or leave dataset.reg_path "
                           "empty.")
    warnings = list(report.warnings)
    tagged = [ex for ex in examples if has_trigger(ex.caption, trigger)]
    if tagged:
        warnings.append(f"{len(tagged)} of {len(examples)} regularization captions contain the "
                        f"trigger word {trigger!r} (e.g. {tagged[0].image_path.name}): the LoRA "
                        f"learns those images as the concept. Remove the trigger word from "
                        f"them.")
    return RegularizationSet(examples, fits, skipped, warnings, folders)


@dataclass
class TrainingSet:
    """Everything the loop needs to know about its data."""

    plan: DatasetPlan
    examples: list[Example]  # the dataset's, then the regularization images
    reg: RegularizationSet | None
    order: DataOrder
    data: TrainData
    validation: ValidationSet | None = None  # held-out images (never in the batch order)

    @property
    def num_train_images(self) -> int:
        return len(self.plan.report.items)


def prepare_training_set(cfg, processes: int, say: Callable[[str, str], None],
                         between: Callable[[], None] = lambda: None) -> TrainingSet:
    """Check and plan the dataset (and regularization images) of a validated config, say what
    training will do (`say(text, level)`), and set up the batch order and the data;
    `between()` runs before each image is decoded (where a cancel lands)."""
    from lora_studio.core.dataset.checks import describe_caption_sources, min_image_side
    from lora_studio.core.dataset.plan import check_from_config, format_training, plan_from_config
    from lora_studio.core.errors import DatasetError

    from lora_studio.core.train.validation import split_validation, validation_set

    d, tr = cfg.dataset, cfg.train
    report = check_from_config(cfg, between)
    for skipped in report.skipped:
        say(f"Skipped {skipped.path.name}: {skipped.reason}", "warning")
    if not report.usable:
        raise DatasetError(f"No usable images in {d.path or 'the dataset folders'} "
                           f"({len(report.skipped)} skipped).",
                           "Add PNG/JPEG/WebP images (with .txt captions beside them) to the "
                           "folder, fix the skipped files listed above, or point dataset.path "
                           "at the folder that holds your images (or its kohya N_name "
                           "folders).")
    for line in report.warnings:
        say(line, "warning")
    report, held_out, validation_source = split_validation(cfg, report)
    reg = None
    if d.reg_path:
        reg = load_regularization(d.reg_path, caption_extension=d.caption_extension,
                                  min_size=min_image_side(d.resolution), trigger=d.trigger_word,
                                  first_index=report.usable, settings=cfg.bucket_settings(),
                                  between=between)
        for line in reg.skipped:
            say(f"Skipped regularization image {line}", "warning")
        for line in reg.warnings:
            say(line, "warning")
        say(f"Regularization: {len(reg.examples)} images from {d.reg_path}, as many "
            f"regularization samples per epoch as dataset samples, loss weight "
            f"{tr.prior_loss_weight:g}.", "info")
    plan = plan_from_config(cfg, report=report, reg_examples=reg.examples if reg else (),
                            processes=processes)
    say(f"Captions: {describe_caption_sources(report)}.", "info")
    for line in format_training(plan):
        say(line, "warning" if line.lstrip().startswith("!") else "info")
    if plan.long_captions:
        say(f"{len(plan.long_captions)} caption(s) are longer than {d.max_token_length} "
            f"tokens and are cut (listed above); dataset.max_token_length = 150 or 225 reads "
            "them whole.", "warning")
    examples = plan.examples() + (reg.examples if reg else [])
    fits = dict(enumerate(plan.fits))
    fits.update(reg.fits if reg else {})
    order = DataOrder(examples, batch_size=tr.batch_size, seed=tr.seed,
                      random_flip=d.random_flip)
    validation = None
    if held_out:
        validation = validation_set(held_out, validation_source, len(examples),
                                    cfg.bucket_settings())
        fits.update(validation.fits)
        every = (f"every {tr.validate_every_n_steps} steps" if tr.validate_every_n_steps
                 else "at the end of every epoch")
        say(f"Validation: {validation_source}, scored {every}.", "info")
    data = TrainData(examples + (validation.examples if validation else []), fits,
                     d.center_crop, tr.seed, cfg.caption_options(), d.max_token_length,
                     crop_per_image=tr.cache_latents)
    return TrainingSet(plan, examples, reg, order, data, validation)


def encode_text(tokenizer, text_encoder, captions: list[str],
                max_token_length: int = 75) -> torch.Tensor:
    """Captions → conditioning: one CLIP window as StableDiffusionPipeline.encode_prompt reads
    a prompt, or kohya's 2-3 windows for max_token_length 150 / 225."""
    return encode_captions(tokenizer, text_encoder, captions, max_token_length)


def trigger_patterns(trigger: str) -> list[re.Pattern]:
    """One case-blind whole-words pattern per comma-separated trigger phrase ("sks, ohwx
    woman" -> "sks" and "ohwx woman"; "zqstars" does not match "zqstar")."""
    return [re.compile(rf"(?<!\w){re.escape(' '.join(w.split()))}(?!\w)", re.IGNORECASE)
            for w in trigger.split(",") if w.strip()]


def has_trigger(caption: str, trigger: str) -> bool:
    """Does the caption hold any of the trigger phrases (what `without_trigger` removes)?"""
    text = " ".join(caption.split())
    return any(pattern.search(text) for pattern in trigger_patterns(trigger))


def without_trigger(caption: str, trigger: str) -> str:
    """The caption with every trigger phrase removed (and the commas it leaves):
    "zqstar, a red star" -> "a red star", "ohwx woman, smiling" -> "smiling" (trigger
    "ohwx woman"). What the base model is kept on (preserve_base)."""
    patterns = trigger_patterns(trigger)
    parts = []
    for part in caption.split(","):
        kept = " ".join(part.split())
        for pattern in patterns:
            kept = pattern.sub(" ", kept)
        kept = " ".join(kept.split())
        if kept:
            parts.append(kept)
    return ", ".join(parts)


def latent_distribution(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of a batch of images in [-1, 1]: (mean, std), float32."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return dist.mean.float(), dist.std.float()


def sample_latents(vae, mean: torch.Tensor, std: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """Draw latents from the posterior with `generator` and scale them for the UNet."""
    noise = torch.randn(mean.shape, generator=generator, device=generator.device)
    z = mean + std * noise.to(mean.device)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * vae.config.scaling_factor


class TrainData(SampleMaker):
    """Pixels, captions, cached latents and cached text embeddings of the examples, by index
    (the pixels and captions are `SampleMaker`'s: what "what the model sees" shows)."""

    def __init__(self, examples: Sequence[Example], fits: dict[int, BucketFit],
                 center_crop: bool, seed: int, caption_options: CaptionOptions | None = None,
                 max_token_length: int = 75, crop_per_image: bool = True):
        super().__init__(examples, fits, center_crop=center_crop, seed=seed,
                         caption_options=caption_options, crop_per_image=crop_per_image)
        self.max_token_length = max_token_length
        self.latents: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}
        self.text: dict[int, Conditioning] = {}
        self.kept_text: dict[int, Conditioning] = {}  # captions without the trigger word

    def pixels(self, index: int, flip: bool, position: int | None = None) -> torch.Tensor:
        """Image `index` transformed for training: [3, H, W] in [-1, 1]."""
        return image_to_tensor(self.image(index, flip, position)[0])

    def sample_caption(self, sample: Sample) -> str:
        return self.caption(sample.index, sample.position)

    def geometry(self, sample: Sample) -> SampleGeometry:
        """The sample's original size, crop and bucket (SDXL's size / crop conditioning), as
        `image` crops and mirrors it, without decoding the image."""
        fit = self.fits[sample.index]
        left, top, right, _ = self.crop_box(sample.index, sample.position)
        if sample.flip:
            left = fit.resized[0] - right
        return SampleGeometry(original=(fit.original[1], fit.original[0]), crop=(top, left),
                              target=(fit.bucket[1], fit.bucket[0]))

    @torch.no_grad()
    def cache_latents(self, vae, flips: tuple[bool, ...], batch_size: int | None = None,
                      between: Callable[[], None] = lambda: None) -> None:
        """Encode every image once per flip variant; afterwards training never runs the VAE.
        Images are encoded by bucket (one size per VAE call), `cache_batch_size` of them at a
        time unless `batch_size` says otherwise; `between()` runs before each VAE call (where a
        cancel lands)."""
        keys = sorted(((ex.index, flip) for ex in self.examples for flip in flips),
                      key=lambda key: (self.examples[key[0]].bucket, key))
        for run in _same_bucket_runs(keys, self.examples):
            size = batch_size or cache_batch_size(*self.examples[run[0][0]].bucket)
            for start in range(0, len(run), size):
                between()
                group = run[start:start + size]
                pixels = torch.stack([self.pixels(i, f) for i, f in group])
                mean, std = latent_distribution(vae, pixels)
                for k, key in enumerate(group):
                    self.latents[key] = (mean[k:k + 1].cpu(), std[k:k + 1].cpu())
        self.forget_images()  # the decoded images are no longer needed

    @torch.no_grad()
    def cache_text(self, encode: Callable[[list[str]], Conditioning], batch_size: int = 16,
                   trigger: str | None = None, between: Callable[[], None] = lambda: None) -> None:
        """Encode every caption once with `encode` (the family's: hidden states and any pooled
        embedding; only when neither the text encoders nor the caption change from step to
        step); with `trigger`, also every caption without it (for preserve_base)."""
        for start in range(0, len(self.examples), batch_size):
            between()
            chunk = self.examples[start:start + batch_size]
            captions = [self.caption(ex.index) for ex in chunk]
            cond = encode(captions)
            for k, ex in enumerate(chunk):
                self.text[ex.index] = cond.row(k)
            if trigger:
                kept = encode([without_trigger(c, trigger) for c in captions])
                for k, ex in enumerate(chunk):
                    self.kept_text[ex.index] = kept.row(k)


CACHE_PIXELS = 1024 * 1024  # pixels per VAE call while caching latents
MAX_CACHE_BATCH = 8


def cache_batch_size(width: int, height: int) -> int:
    """Images of one bucket encoded per VAE call while caching: at most `CACHE_PIXELS` pixels
    (one 1024 px SDXL image, four at 512 px), so the cache pass never needs more memory than
    encoding one image at the training resolution (eight SDXL images at once took ~20 GiB)."""
    return max(1, min(MAX_CACHE_BATCH, CACHE_PIXELS // max(1, width * height)))


def _same_bucket_runs(keys: list[tuple[int, bool]], examples: Sequence[Example]):
    """Split sorted cache keys into runs of one bucket each."""
    run: list[tuple[int, bool]] = []
    for key in keys:
        if run and examples[key[0]].bucket != examples[run[0][0]].bucket:
            yield run
            run = []
        run.append(key)
    if run:
        yield run
