"""Validation: a loss on images the LoRA never trains on, comparable from step to step.

The images are a share of the dataset held out before training (kohya's `validation_split`,
chosen by the run's seed) or a folder of their own (`dataset.validation_path`). Each one is
scored at fixed timesteps spread over the trained range, with fixed noise drawn from its own
generator (seeded by the run's seed and the image), from its latent posterior's mean, its
plain caption and its centre (or per-image) crop, with dropout off: the value moves only when
the LoRA's weights do, so computing it twice on the same weights gives the same number, and
validating never draws from the training's own random streams (a run with validation trains
the same LoRA as one without).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from lora_studio.core.dataset.buckets import BucketFit
from lora_studio.core.dataset.order import Example, Sample
from lora_studio.core.dataset.scan import DatasetItem, DatasetReport
from lora_studio.core.errors import DatasetError

TIMESTEP_COUNT = 5


@dataclass
class ValidationSet:
    """The validation images (examples indexed after every training example) and where they
    came from, said in words."""

    examples: list[Example]
    fits: dict[int, BucketFit]
    source: str

    def timesteps(self, objective) -> list[int]:
        """`TIMESTEP_COUNT` timesteps evenly inside the objective's trained range."""
        low, high = objective.min_timestep, objective.top_timestep
        return [int(low + (high - low) * (k + 0.5) / TIMESTEP_COUNT)
                for k in range(TIMESTEP_COUNT)]


def hold_out(report: DatasetReport, share: float, seed: int
             ) -> tuple[DatasetReport, list[DatasetItem]]:
    """(the report without the held-out images, the held-out images): `share` of the images,
    at least one, chosen by `seed`; at least one image is left to train on."""
    count = len(report.items)
    held = min(max(1, round(share * count)), count - 1)
    if held < 1:
        raise DatasetError(f"dataset.validation_split needs at least 2 images; the dataset has "
                           f"{count}.", "Add images, or set dataset.validation_split = 0.")
    chosen = set(random.Random(f"validation:{seed}").sample(range(count), held))
    kept = [item for i, item in enumerate(report.items) if i not in chosen]
    return (dataclasses.replace(report, items=kept),
            [item for i, item in enumerate(report.items) if i in chosen])


def _validation_folder(cfg) -> list[DatasetItem]:
    from lora_studio.core.dataset.checks import check_dataset, min_image_side

    d = cfg.dataset
    try:
        report = check_dataset(d.validation_path, caption_extension=d.caption_extension,
                               default_caption=d.default_caption,
                               min_size=min_image_side(d.resolution))
    except DatasetError as exc:
        raise DatasetError(f"Validation images (dataset.validation_path): {exc.what}",
                           exc.fix + " Or leave dataset.validation_path empty.") from exc
    if not report.items:
        raise DatasetError(f"No usable validation images in {d.validation_path}.",
                           "Add captioned images to it, or leave dataset.validation_path "
                           "empty.")
    return report.items


def split_validation(cfg, report: DatasetReport) -> tuple[DatasetReport, list[DatasetItem], str]:
    """(the report to train on, the validation images, where they come from) for a config;
    no images when it asks for no validation."""
    d = cfg.dataset
    if d.validation_path:
        items = _validation_folder(cfg)
        return report, items, f"{len(items)} images from {d.validation_path}"
    if d.validation_split and report.items:
        kept, held = hold_out(report, d.validation_split, cfg.train.seed)
        return kept, held, (f"{len(held)} of the {len(report.items)} dataset images, held out "
                            f"(validation_split {d.validation_split:g})")
    return report, [], ""


def validation_set(items: list[DatasetItem], source: str, first_index: int,
                   settings) -> ValidationSet:
    """The validation images as examples at their buckets, indexed from `first_index`."""
    from lora_studio.core.dataset.plan import fit_items

    examples, fits = [], {}
    for k, (item, fit) in enumerate(zip(items, fit_items(items, settings))):
        index = first_index + k
        examples.append(Example(index, Path(item.image_path), item.caption, 1,
                                bucket=fit.bucket))
        fits[index] = fit
    return ValidationSet(examples, fits, source)


@torch.no_grad()
def validation_loss(family, objective, data, vset: ValidationSet, *, encode, cached_text: bool,
                    device, dtype: torch.dtype, seed: int) -> float:
    """The mean loss of the validation images at fixed noise and timesteps (see the module
    doc), one denoiser call per bucket. The caller puts the networks in eval mode around it."""
    from lora_studio.core.train.objective import step_loss

    timesteps = vset.timesteps(objective)
    by_bucket: dict[tuple[int, int], list[Example]] = {}
    for ex in vset.examples:
        by_bucket.setdefault(ex.bucket, []).append(ex)
    total = 0.0
    for examples in by_bucket.values():
        latents, noise, cond, geometry = _validation_batch(
            family, data, examples, len(timesteps), encode=encode, cached_text=cached_text,
            device=device, seed=seed)
        steps = torch.tensor(timesteps * len(examples), device=device)
        loss = step_loss(family, objective, latents, noise, steps, cond, geometry, dtype)
        total += loss.item() * len(examples)
    return total / len(vset.examples)


def _validation_batch(family, data, examples: list[Example], count: int, *, encode,
                      cached_text: bool, device, seed: int):
    """Latents (posterior means), fixed noise, conditioning and geometry of `examples`, each
    repeated `count` times (one per validation timestep)."""
    from lora_studio.core.train.data import latent_distribution
    from lora_studio.core.train.families import Conditioning

    config = family.vae.config
    latents, noise, conds, geometry = [], [], [], []
    for ex in examples:
        if (ex.index, False) in data.latents:
            mean = data.latents[(ex.index, False)][0]
        else:
            mean, _ = latent_distribution(family.vae, data.pixels(ex.index, False).unsqueeze(0))
        z = (mean.to(device) - (getattr(config, "shift_factor", None) or 0.0)) \
            * config.scaling_factor
        latents.append(z.repeat(count, 1, 1, 1))
        generator = torch.Generator().manual_seed(seed * 1_000_003 + ex.index)
        noise.append(torch.randn(latents[-1].shape, generator=generator).to(device))
        cond = data.text[ex.index] if cached_text else encode([data.caption(ex.index)])
        conds.extend([cond] * count)
        geometry.extend([data.geometry(Sample(ex.index, False, None, 0))] * count)
    return (torch.cat(latents), torch.cat(noise), Conditioning.cat(conds).to(device), geometry)
