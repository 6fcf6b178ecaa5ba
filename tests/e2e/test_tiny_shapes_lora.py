"""Issue 4's LoRA targets on the built-in model: does a LoRA trained with the app's default
settings teach Tiny Shapes a new concept, follow the prompt, and leave the rest alone?

The star LoRA is the quickstart preset (= the Train tab's defaults for the shipped sample),
trained by `lora-studio train` (about 3.5 minutes on one core, from the start of the test run:
conftest's `star_lora`). Then the studio's own generation session loads the exported file and
the scorer reads what is drawn on fixed seeds, so a regression in training, export, loading or
generation shows up as a quality drop, not only as a crash. `-s` prints the measured numbers.
The last test stacks it with a stripes LoRA (trained beside it, conftest's `stripes_lora`).
"""

from __future__ import annotations

import pytest

from lora_studio.core.models.tiny_shapes import quality, sample_data
from tiny_shapes_loras import adapter_name, studio_render, studio_session, use_only

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2, 3)
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
SIZES = sample_data.CONCEPTS["star"][3]  # large: the sample's stars


@pytest.fixture(scope="module")
def studio(star_lora):  # star_lora (conftest) starts training when the test run begins
    """The Generate tab's session with the star LoRA loaded, and the LoRA's adapter name."""
    session = studio_session()
    return session, adapter_name(session, star_lora)


@pytest.fixture(scope="module")
def star_curve(studio):
    session, star = studio
    reports = {}
    for strength in STRENGTHS:
        use_only(session, {star: strength})
        reports[strength] = quality.concept_quality(session.pipeline, "zqstar", "star",
                                                    seeds=SEEDS, sizes=SIZES)
    rates = {s: quality.concept_rate(r, "star") for s, r in reports.items()}
    print("\nstar rate by strength: " + ", ".join(f"{s:g}: {r:.2f}" for s, r in rates.items()))
    return rates, reports


def test_the_trigger_prompt_shows_the_star_at_1_and_not_at_0(star_curve):
    rates, reports = star_curve
    assert rates[1.0] >= 0.8, rates
    assert rates[0.0] <= 0.1, rates
    assert reports[1.0].rates["color"] >= 0.95 and reports[1.0].rates["background"] >= 0.95


def test_the_effect_grows_with_strength(star_curve):
    rates, _ = star_curve
    values = [rates[s] for s in STRENGTHS[:5]]
    assert all(b >= a - 0.05 for a, b in zip(values, values[1:])), rates  # no real dips
    # not an on/off switch: some strength in between gives part of the effect
    assert any(0.1 < rates[s] < 0.8 for s in (0.25, 0.5, 0.75)), rates


def test_the_star_follows_the_prompt_not_one_training_picture(star_curve):
    _, reports = star_curve
    scenes = quality.concept_test_scenes("star", sizes=SIZES)
    trained = {(s.color, s.background) for s in sample_data.concept_scenes("star")}
    readings = [(r, scenes[i // len(SEEDS)]) for i, r in enumerate(reports[1.0].readings)]
    unseen = [(r, s) for r, s in readings if (s.color, s.background) not in trained]
    assert len(unseen) == 7 * len(SEEDS)  # the sample has 8 of the 15 pairs
    color = sum(r.color == s.color for r, s in unseen) / len(unseen)
    background = sum(r.background == s.background for r, s in unseen) / len(unseen)
    stars = sum(r.shape == "star" for r, _ in unseen) / len(unseen)
    print(f"\nunseen color x background pairs: star {stars:.2f}, color {color:.2f}, "
          f"background {background:.2f}")
    assert color >= 0.9 and background >= 0.9
    assert stars >= 0.7


def test_prompts_without_the_trigger_keep_their_base_quality(studio):
    session, star = studio
    seeds = SEEDS[:2]
    use_only(session, {})
    base = quality.base_quality(session.pipeline, seeds)
    use_only(session, {star: 1.0})
    with_lora = quality.base_quality(session.pipeline, seeds)
    print(f"\nbase prompts without the LoRA: {base.line()}\nwith the LoRA at 1.0: "
          f"{with_lora.line()}")
    assert with_lora.rates["all"] >= 0.85 * base.rates["all"]


# The stripes come in at half the steps: by then the star LoRA has laid the star out, and the
# stripes LoRA (trained on circles, squares and triangles) no longer pulls the outline toward
# them. Measured: both in 0.63 of seeds (star 0.80, striped 0.73); on from the first step, 0.48
# (star 0.58).
STRIPES_START = 0.5


def test_a_star_lora_and_a_stripes_lora_compose(studio, stripes_lora):
    session, star = studio
    stripes = adapter_name(session, stripes_lora)
    session.set_start(stripes, STRIPES_START)
    use_only(session, {star: 1.0, stripes: 1.0})
    scenes = quality.concept_test_scenes("star", texture="striped", sizes=SIZES)
    prompts = [f"zqstar, zqstripe, {s.caption()}" for s in scenes]
    images = studio_render(session, prompts, SEEDS)
    report = quality.score(scenes, images, len(SEEDS), texture=True)
    both = quality.concept_rate(report, "star", "striped")
    print(f"\nstar 1.0 + stripes 1.0 from half the steps: both {both:.2f} (star "
          f"{quality.concept_rate(report, 'star'):.2f}, striped "
          f"{quality.concept_rate(report, None, 'striped'):.2f})")
    assert both > 0.5
    assert report.rates["color"] >= 0.9 and report.rates["background"] >= 0.9
