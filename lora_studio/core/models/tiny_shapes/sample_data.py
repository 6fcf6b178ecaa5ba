"""LoRA datasets of concepts the base model has never seen: the shipped sample and test sets.

    write_concept_dataset(folder, "star")      # zqstar: stars of every color, size and place
    write_concept_dataset(folder, "stripes")   # zqstripe: striped circles, squares, triangles
    write_regularization_set(folder)           # the base world, for dataset.reg_path
                                               # (resources/sample_dataset_reg)

Each image gets a kohya-style caption beside it (`name.txt`), trigger word first:
"zqstar, a large purple star on a gray background". Colors, backgrounds, sizes and positions
vary, so a LoRA learns the concept, not one picture. The diagonal stripes are not
mirror-symmetric: train them with `dataset.random_flip = false`, or the mirrored copies teach
both diagonals at once and the LoRA draws their average, faint stripes (measured: stripes in
0.25 of seeds at strength 1.0 with flips, 0.70 without).
"""

from __future__ import annotations

import random
from pathlib import Path

from lora_studio.core.models.tiny_shapes import world

CONCEPTS = {
    # name: (trigger word, shapes, texture)
    "star": ("zqstar", world.CONCEPT_SHAPES, "plain"),
    "stripes": ("zqstripe", world.SHAPES, "striped"),
}


def mirror_safe(concept: str) -> bool:
    """May the concept be trained with random_flip? Every plain shape here is mirror-symmetric
    (stars stand upright); the diagonal stripes are not."""
    return CONCEPTS[concept][2] == "plain"


def concept_scenes(concept: str, count: int = 12, seed: int = 7) -> list[world.Scene]:
    """`count` scenes of the concept, every color x background pair before any repeats."""
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; one of {', '.join(CONCEPTS)}")
    _, shapes, texture = CONCEPTS[concept]
    rng = random.Random(seed)
    pairs = [(c, b) for c in world.COLORS for b in world.BACKGROUNDS]
    rng.shuffle(pairs)
    scenes = []
    for i in range(count):
        color, background = pairs[i % len(pairs)]
        x, y, size_t, _turn = rng.random(), rng.random(), rng.random(), rng.random()
        # Stars stand upright, as a star is usually drawn: with a random turn of the points
        # the LoRA drew the average of every turn, a blob (measured: stars 0.30 -> 0.43 of
        # seeds at strength 1.0; small ones 0 -> 0.13). The unused draw keeps the places.
        scenes.append(world.Scene(shapes[i % len(shapes)], color, world.SIZES[i % 2],
                                  background, x, y, size_t, 0.0, texture))
    return scenes


def write_concept_dataset(folder: str | Path, concept: str = "star", count: int = 12,
                          seed: int = 7) -> Path:
    """Write the images and captions into `folder` (created); returns it."""
    trigger = CONCEPTS[concept][0] if concept in CONCEPTS else ""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(concept_scenes(concept, count, seed)):
        stem = f"{concept}_{i:02d}"
        world.draw(scene).save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(scene.caption(trigger=trigger) + "\n",
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
