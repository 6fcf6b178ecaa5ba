"""Training data: which image each step sees, and the latent / text-embedding cache.

Data order is a pure function of (seed, position in the sample stream): epoch `e` is a seeded
shuffle of the dataset (each image listed `repeats` times), and sample position `p` falls in
epoch `p // epoch_length`. A run resumed at step k therefore sees exactly the images a run that
never stopped would have seen, without saving a sampler's state; the flip of each sample and a
random crop are drawn the same way (seeded by position).

The cache is keyed by *dataset index* (and flip), never by step: a shuffled loader can then never
pair an image's latents with another image's caption (the reference scripts' bug, REFERENCE §5).
It stores the VAE's latent *distribution* (mean and std) of each image once (both flips when
`random_flip` is on) and draws a fresh latent sample from it every step with the trainer's noise
generator, exactly what encoding every step would do, only without running the encoder again.
Text embeddings are cached per caption unless the text encoder is being trained (then they change
every step and are computed in the loop).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lora_studio.core.dataset.transforms import image_to_tensor, load_image_rgb, prepare_image


@dataclass
class Example:
    """One usable image of the dataset, at a fixed dataset index."""

    index: int
    image_path: Path
    caption: str
    repeats: int = 1
    regularization: bool = False  # from dataset.reg_path: trained with prior_loss_weight


class DataOrder:
    """Maps a position in the endless sample stream to (dataset index, flip).

    With regularization examples, an epoch is the dataset's slots plus as many regularization
    slots (kohya's balance), shuffled together; the regularization slots walk on through the
    regularization images from epoch to epoch, so a pool larger than the dataset is all used."""

    def __init__(self, examples: list[Example], repeats: int, seed: int, random_flip: bool):
        self.slots = [ex.index for ex in examples if not ex.regularization
                      for _ in range(ex.repeats * repeats)]
        self.reg_pool = [ex.index for ex in examples if ex.regularization
                         for _ in range(ex.repeats)]
        self.seed = seed
        self.random_flip = random_flip
        self._perm_epoch = -1
        self._perm: list[int] = []

    @property
    def epoch_length(self) -> int:
        return len(self.slots) * (2 if self.reg_pool else 1)

    def epoch_of(self, position: int) -> int:
        return position // self.epoch_length

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            order = list(range(self.epoch_length))
            random.Random(f"order:{self.seed}:{epoch}").shuffle(order)
            self._perm_epoch, self._perm = epoch, order
        return self._perm

    def index_at(self, position: int) -> int:
        epoch, k = divmod(position, self.epoch_length)
        slot = self._permutation(epoch)[k]
        if slot < len(self.slots):
            return self.slots[slot]
        walked = epoch * len(self.slots) + slot - len(self.slots)
        return self.reg_pool[walked % len(self.reg_pool)]

    def flip_at(self, position: int) -> bool:
        return self.random_flip and random.Random(f"flip:{self.seed}:{position}").random() < 0.5


@dataclass
class RegularizationSet:
    """The usable regularization images (as examples) and what a person should hear about."""

    examples: list[Example]
    skipped: list[str]  # "name: reason"
    warnings: list[str]
    folders: dict[str, dict[str, int]]  # kohya's ss_reg_dataset_dirs


def load_regularization(folder: str | Path, *, caption_extension: str, min_size: int,
                        trigger: str, first_index: int) -> RegularizationSet:
    """Scan a regularization folder (kohya layout: `N_class/` subfolders) into examples with
    indices from `first_index` on. An image without a caption file is captioned with its
    folder's class; one with neither is skipped. Raises DatasetError when none is usable."""
    from lora_studio.core.dataset.checks import check_dataset
    from lora_studio.core.dataset.scan import kohya_class_for
    from lora_studio.core.errors import DatasetError

    try:
        report = check_dataset(folder, caption_extension=caption_extension, min_size=min_size,
                               recursive=True)
    except DatasetError as exc:  # "Dataset folder ... does not exist": say which folder
        raise DatasetError(f"Regularization images (dataset.reg_path): {exc.what}",
                           exc.fix + " Or leave dataset.reg_path empty.") from exc
    skipped = [f"{s.path.name}: {s.reason}" for s in report.skipped]
    examples: list[Example] = []
    folders: dict[str, dict[str, int]] = {}
    for item in report.items:
        caption = item.caption or kohya_class_for(item.image_path, report.root)
        if not caption:
            skipped.append(f"{item.image_path.name}: no caption file and not in a kohya "
                           f"N_class folder (add {item.image_path.stem}{caption_extension})")
            continue
        examples.append(Example(first_index + len(examples), item.image_path, caption,
                                item.repeats, regularization=True))
        entry = folders.setdefault(item.image_path.parent.name,
                                   {"n_repeats": item.repeats, "img_count": 0})
        entry["img_count"] += 1
    if not examples:
        raise DatasetError(f"No usable regularization images in {report.root} "
                           f"({len(skipped)} skipped).",
                           "Add captioned images of what the LoRA should leave alone (a .txt "
                           "beside each, or kohya N_class folders), or leave dataset.reg_path "
                           "empty.")
    warnings = []
    tagged = [ex for ex in examples if has_trigger(ex.caption, trigger)]
    if tagged:
        warnings.append(f"{len(tagged)} of {len(examples)} regularization captions contain the "
                        f"trigger word {trigger!r} (e.g. {tagged[0].image_path.name}): the LoRA "
                        f"learns those images as the concept. Remove the trigger word from "
                        f"them.")
    return RegularizationSet(examples, skipped, warnings, folders)


def encode_text(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    """Caption → conditioning, exactly as StableDiffusionPipeline.encode_prompt does it."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


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


def token_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


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


class TrainData:
    """Pixels, cached latents and cached text embeddings of the examples, by dataset index."""

    def __init__(self, examples: list[Example], resolution: int, center_crop: bool, seed: int):
        self.examples = examples
        self.resolution = resolution
        self.center_crop = center_crop
        self.seed = seed
        self.latents: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}
        self.text: dict[int, torch.Tensor] = {}
        self.kept_text: dict[int, torch.Tensor] = {}  # captions without the trigger word
        self._images: dict[int, object] = {}

    def pixels(self, index: int, flip: bool, position: int | None = None) -> torch.Tensor:
        """Image `index` transformed for training: [3, H, W] in [-1, 1].

        A random crop (center_crop = false) is drawn per sample position, or once per image when
        `position` is None (what the latent cache uses)."""
        if index not in self._images:
            self._images[index] = load_image_rgb(self.examples[index].image_path)
        tag = "image" if position is None else position
        rng = random.Random(f"crop:{self.seed}:{index}:{tag}")
        img = prepare_image(self._images[index], self.resolution, center_crop=self.center_crop,
                            flip=flip, rng=rng)
        return image_to_tensor(img)

    @torch.no_grad()
    def cache_latents(self, vae, flips: tuple[bool, ...], batch_size: int = 8) -> None:
        """Encode every image once per flip variant; afterwards training never runs the VAE."""
        keys = [(ex.index, flip) for ex in self.examples for flip in flips]
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            pixels = torch.stack([self.pixels(i, f) for i, f in chunk])
            mean, std = latent_distribution(vae, pixels)
            for k, key in enumerate(chunk):
                self.latents[key] = (mean[k:k + 1].cpu(), std[k:k + 1].cpu())
        self._images.clear()  # the decoded images are no longer needed

    @torch.no_grad()
    def cache_text(self, tokenizer, text_encoder, batch_size: int = 16,
                   trigger: str | None = None) -> None:
        """Encode every caption once (only when the text encoder is frozen); with `trigger`,
        also every caption without it (for preserve_base)."""
        for start in range(0, len(self.examples), batch_size):
            chunk = self.examples[start:start + batch_size]
            emb = encode_text(tokenizer, text_encoder, [ex.caption for ex in chunk]).float()
            for k, ex in enumerate(chunk):
                self.text[ex.index] = emb[k:k + 1].cpu()
            if trigger:
                kept = encode_text(tokenizer, text_encoder,
                                   [without_trigger(ex.caption, trigger) for ex in chunk])
                for k, ex in enumerate(chunk):
                    self.kept_text[ex.index] = kept[k:k + 1].float().cpu()
