"""How well a Tiny Shapes model (and a LoRA on it) draws what it is asked, read by the scorer.

    report = base_quality(pipe)                  # every base prompt x seeds
    report.rates -> {"color": .98, "shape": .97, "background": 1.0, "size": .99,
                     "texture": 1.0, "all": .95}
    report = concept_quality(pipe, "zqstar", "star", sizes=["large"])  # with a LoRA loaded
    concept_rate(report, "star") -> .83                                 # stars drawn

Renders are batched (one pipeline call per chunk of prompts), each image with its own CPU
generator seeded like the studio does, so a number can be re-made image by image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lora_studio.core.models.tiny_shapes import scorer, world

STEPS = 20
GUIDANCE = 5.0
SEEDS = (0, 1)
ATTRIBUTES = ("color", "shape", "background", "size", "all")


@dataclass
class QualityReport:
    """Share of pictures where each attribute is right, and the pictures themselves."""

    rates: dict[str, float]
    count: int
    readings: list[scorer.Reading] = field(default_factory=list, repr=False)
    images: list = field(default_factory=list, repr=False)

    def line(self) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in self.rates.items()) + f" (n={self.count})"


def render(pipe, prompts: Sequence[str], seeds: Iterable[int], *, steps: int = STEPS,
           guidance: float = GUIDANCE, chunk: int = 48) -> list:
    """Every prompt at every seed (prompt-major: p0s0, p0s1, p1s0, ...), 64x64 PIL images."""
    import torch

    jobs = [(p, s) for p in prompts for s in seeds]
    images = []
    for start in range(0, len(jobs), chunk):
        part = jobs[start:start + chunk]
        out = pipe(prompt=[p for p, _ in part], num_inference_steps=steps,
                   guidance_scale=guidance,
                   generator=[torch.Generator().manual_seed(int(s)) for _, s in part])
        images.extend(out.images)
    return images


def score(scenes: Sequence[world.Scene], images: Sequence, seeds_per_scene: int, *,
          texture: bool = False) -> QualityReport:
    keys = ATTRIBUTES[:-1] + (("texture",) if texture else ()) + ("all",)
    totals = dict.fromkeys(keys, 0)
    readings = [scorer.read_picture(im) for im in images]
    for i, reading in enumerate(readings):
        for key, ok in reading.matches(scenes[i // seeds_per_scene], texture=texture).items():
            totals[key] += ok
    n = len(readings)
    return QualityReport({k: v / n for k, v in totals.items()}, n, readings, list(images))


def base_quality(pipe, seeds: Sequence[int] = SEEDS, scenes: Sequence[world.Scene] | None
                 = None, trigger: str = "", **render_kw) -> QualityReport:
    """Every color x shape x size x background prompt (optionally with `trigger` in front).
    The plain fill the prompts ask for counts as an attribute ("texture"): a LoRA that
    stripes every shape keeps color, shape and size, and still bleeds."""
    scenes = list(scenes or world.base_scenes())
    prompts = [s.caption(trigger=trigger) for s in scenes]
    return score(scenes, render(pipe, prompts, seeds, **render_kw), len(seeds), texture=True)


def concept_test_scenes(shape: str = "star", texture: str = "plain",
                        sizes: Sequence[str] = world.SIZES) -> list[world.Scene]:
    """The test prompts of a concept: one per color x background x size (15 per size). (A
    concept's training pictures are `sample_data.concept_scenes`.)"""
    return [world.Scene(shape, c, z, b, texture=texture) for c in world.COLORS
            for b in world.BACKGROUNDS for z in sizes]


def concept_quality(pipe, trigger: str, shape: str = "star", texture: str = "plain",
                    seeds: Sequence[int] = SEEDS, sizes: Sequence[str] = world.SIZES,
                    **render_kw) -> QualityReport:
    """The trigger prompts (`"<trigger>, a large red star on a white background"`), scored with
    the concept's own shape / texture as the truth."""
    scenes = concept_test_scenes(shape, texture, sizes)
    prompts = [s.caption(trigger=trigger) for s in scenes]
    return score(scenes, render(pipe, prompts, seeds, **render_kw), len(seeds),
                 texture=texture != "plain")


def shows_concept(reading: scorer.Reading, shape: str | None, texture: str | None) -> bool:
    return (shape is None or reading.shape == shape) and \
        (texture is None or reading.texture == texture)


def concept_rate(report: QualityReport, shape: str | None = "star",
                 texture: str | None = None) -> float:
    """Share of the report's pictures that show the concept (its shape and/or texture)."""
    hits = sum(shows_concept(r, shape, texture) for r in report.readings)
    return hits / max(1, len(report.readings))
