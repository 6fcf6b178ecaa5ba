"""Issue 4's last LoRA target, measured: do two concept LoRAs compose when stacked (both
visible in most seeds)? NOT YET MET (see the README's Tiny Shapes section), so this lives with
the benchmarks (not collected by the suite) until a recipe reaches it; then it joins
tests/e2e/test_tiny_shapes_lora.py. Run:
`python -m pytest tests/benchmarks/tiny_shapes_lora_compose.py -s` (~10 min on 2 cores).

Three LoRAs are trained by `lora-studio train` with the quickstart preset: the star on the
shipped sample (its reg pictures and timestep range); the second concepts on their
`sample_data` sets:
- stripes (a texture on the shape), without reg pictures on timesteps 0-400
  (`tiny_shapes_loras.stripes_settings`). Measured: stripes alone 0.72 at 1.0; stacked with the
  star at 1.0 + 1.0 both in 0.48 of seeds (star 0.58, striped 0.75); at 1.0 + 0.75 both in
  0.22 (star 0.75, striped 0.25). The stripes take the star away.
- navy (a background color, "on a zqx background"), with reg pictures on every timestep
  (`tiny_shapes_loras.navy_settings`). Measured: navy alone 0.60 at 1.0; stacked both in 0.28
  (star 0.80, navy 0.30). The star holds; the navy LoRA is what falls short (it ties the
  background to the shape's color: dark red behind red stars, navy behind blue ones).
"""

from __future__ import annotations

import pytest

from lora_studio.core.models.tiny_shapes import quality, sample_data, scorer, world
from tiny_shapes_loras import (adapter_name, finish_training, navy_settings, start_training,
                               stripes_settings, studio_session, use_only)

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2, 3)
SIZES = sample_data.CONCEPTS["star"].sizes
SECOND = {"stripes": stripes_settings, "navy": navy_settings}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The Generate tab's session with the three LoRAs loaded: concept -> adapter name."""
    root = tmp_path_factory.mktemp("loras")
    runs = {"star": start_training(root / "star")}
    for concept, settings in SECOND.items():
        data = sample_data.write_concept_dataset(root / f"{concept}_data", concept)
        runs[concept] = start_training(root / concept, *settings(data))
    session = studio_session()
    return session, {concept: adapter_name(session, finish_training(
        proc, root / concept, sample_data.CONCEPTS[concept].trigger))
        for concept, proc in runs.items()}


def _alone_scenes(concept: str) -> list[world.Scene]:
    if concept == "navy":  # every base shape and color on navy
        return [world.Scene(s, c, "large", "navy") for c in world.COLORS for s in world.SHAPES]
    return quality.concept_test_scenes("circle", texture="striped")


def _stacked_scenes(concept: str) -> list[world.Scene]:
    """A star with the second concept, in every color (and background, but for navy)."""
    if concept == "navy":
        return [world.Scene("star", c, "large", "navy") for c in world.COLORS]
    return quality.concept_test_scenes("star", texture="striped", sizes=SIZES)


def _shows_second(reading, concept: str) -> bool:
    return reading.background == "navy" if concept == "navy" else reading.texture == "striped"


def _rates(session, concept: str, scenes, seeds, star: bool) -> dict[str, float]:
    """Shares of the renders showing the star, the second concept and both."""
    prompts = [("zqstar, " if star else "") + sample_data.CONCEPTS[concept].caption(s)
               for s in scenes]
    readings = [scorer.read_picture(im)
                for im in quality.render(session.pipeline, prompts, seeds)]
    hits = {"star": [r.shape == "star" for r in readings],
            concept: [_shows_second(r, concept) for r in readings]}
    hits["both"] = [a and b for a, b in zip(*hits.values())]
    return {k: sum(v) / len(v) for k, v in hits.items()}


@pytest.mark.parametrize("concept", list(SECOND))
def test_the_second_lora_alone_shows_its_concept(studio, concept):
    session, adapters = studio
    use_only(session, {adapters[concept]: 1.0})
    rate = _rates(session, concept, _alone_scenes(concept), SEEDS, star=False)[concept]
    print(f"\n{concept} alone at 1.0: {rate:.2f}")
    assert rate >= 0.5


@pytest.mark.parametrize("concept", list(SECOND))
@pytest.mark.parametrize("star_weight, second_weight", [(1.0, 1.0), (1.0, 0.75)])
def test_a_star_lora_and_a_second_lora_compose(studio, concept, star_weight, second_weight):
    session, adapters = studio
    use_only(session, {adapters["star"]: star_weight, adapters[concept]: second_weight})
    seeds = SEEDS if concept == "stripes" else tuple(range(8))  # navy: 5 prompts, 8 seeds
    rates = _rates(session, concept, _stacked_scenes(concept), seeds, star=True)
    print(f"\nstar {star_weight:g} + {concept} {second_weight:g}: both {rates['both']:.2f} "
          f"(star {rates['star']:.2f}, {concept} {rates[concept]:.2f})")
    assert rates["both"] > 0.5
