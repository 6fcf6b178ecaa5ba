"""LoRA datasets of concepts the base model has never seen: the shipped sample and test sets.

    write_concept_dataset(folder, "star")      # zqstar: large stars of every color and place
    write_concept_dataset(folder, "stripes")   # zqstripe: striped circles, squares, triangles
    write_regularization_set(folder)           # the base world, for dataset.reg_path
                                               # (resources/sample_dataset_reg)

Each image gets a kohya-style caption beside it (`name.txt`), trigger word first:
"zqstar, a large purple star on a gray background". Colors and backgrounds vary, and every
caption comes with two pictures at two places, so a LoRA learns the concept, not one
picture. The diagonal stripes are not mirror-symmetric: train them with
`dataset.random_flip = false`, or the mirrored copies teach both diagonals at once and the
LoRA draws their average, faint stripes (measured: stripes in 0.25 of seeds at strength 1.0
with flips, 0.70 without).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

from lora_studio.core.models.tiny_shapes import world


class Concept(NamedTuple):
    trigger: str
    shapes: tuple[str, ...]
    texture: str  # of the shape
    sizes: tuple[str, ...]


CONCEPTS = {
    # Large stars only: a small star's tips are about one latent pixel, and no recipe taught
    # them (measured: small stars in 0 of seeds at 1.0 wherever large ones reached 0.8).
    "star": Concept("zqstar", world.CONCEPT_SHAPES, "plain", ("large",)),
    "stripes": Concept("zqstripe", world.SHAPES, "striped", world.SIZES),
}

# Each caption comes with this many pictures, the shape at different places. With one picture
# per caption the LoRA learned the caption -> picture (every seed drew the star where the
# training picture had it, and color x background pairs it never saw got a star in 0.33-0.58
# of seeds); with two: 0.75 on unseen pairs, and 0.83 stars at 1.0 (was 0.80; 16 large stars
# vs 12, same recipe).
PICTURES_PER_CAPTION = 2
SAMPLE_COUNT = 16


def mirror_safe(concept: str) -> bool:
    """May the concept be trained with random_flip? Every plain shape here is mirror-symmetric
    (stars stand upright); the diagonal stripes are not."""
    return CONCEPTS[concept].texture == "plain"


def concept_scenes(concept: str, count: int = SAMPLE_COUNT, seed: int = 7) -> list[world.Scene]:
    """`count` scenes of the concept in runs of PICTURES_PER_CAPTION with one caption at
    different places; the color x background pairs in a shuffled order (none repeats before
    every pair is used)."""
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; one of {', '.join(CONCEPTS)}")
    _, shapes, texture, sizes = CONCEPTS[concept]
    rng = random.Random(seed)
    pairs = [(c, b) for c in world.COLORS for b in world.BACKGROUNDS]
    rng.shuffle(pairs)
    scenes = []
    for i in range(count):
        caption = i // PICTURES_PER_CAPTION
        color, background = pairs[caption % len(pairs)]
        x, y, size_t, _turn = rng.random(), rng.random(), rng.random(), rng.random()
        # Stars stand upright, as a star is usually drawn: with a random turn of the points
        # the LoRA drew the average of every turn, a blob (measured: stars 0.30 -> 0.43 of
        # seeds at strength 1.0; small ones 0 -> 0.13). The unused draw keeps the places.
        scenes.append(world.Scene(shapes[caption % len(shapes)], color,
                                  sizes[caption % len(sizes)], background, x, y, size_t, 0.0,
                                  texture))
    return scenes


def write_concept_dataset(folder: str | Path, concept: str = "star", count: int = SAMPLE_COUNT,
                          seed: int = 7) -> Path:
    """Write the images and captions into `folder` (created); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(concept_scenes(concept, count, seed)):
        stem = f"{concept}_{i:02d}"
        world.draw(scene).save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(scene.caption(CONCEPTS[concept].trigger) + "\n",
                                            encoding="utf-8")
    return folder


# The shipped set (resources/sample_dataset_reg): a pool this large is walked, not repeated,
# so the LoRA cannot learn its pictures by heart (measured against 36: the base prompts kept
# 0.83 of their quality instead of 0.80).
REG_COUNT = 360


def write_regularization_set(folder: str | Path, count: int = REG_COUNT, seed: int = 11) -> Path:
    """Pictures of the base world (circles, squares, triangles, plain) captioned without a
    trigger word: what a concept LoRA should leave as it is (`dataset.reg_path`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(world.random_scenes(count, seed)):
        world.draw(scene).save(folder / f"reg_{i:02d}.png")
        (folder / f"reg_{i:02d}.txt").write_text(scene.caption() + "\n", encoding="utf-8")
    return folder
