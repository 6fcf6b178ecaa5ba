"""Issue 4's last LoRA target, measured: do two concept LoRAs compose when stacked (a star and a
stripes LoRA, both visible in most seeds)? NOT YET MET (see the README's Tiny Shapes section),
so this lives with the benchmarks (not collected by the suite) until a recipe reaches it; then
it joins tests/e2e/test_tiny_shapes_lora.py. Run:
`python -m pytest tests/benchmarks/tiny_shapes_lora_compose.py -s` (~6 min on 2 cores).

Both LoRAs are trained side by side by `lora-studio train` with the quickstart preset: the star
on the shipped sample (its reg pictures and timestep range), the stripes on the striped-texture
set without reg pictures on timesteps 0-400 (`tiny_shapes_loras.stripes_settings`).
Measured: stripes alone 0.72 at 1.0; stacked at 1.0 + 1.0 both in 0.48 of seeds (star 0.58,
striped 0.75); at 1.0 + 0.75 both in 0.22 (star 0.75, striped 0.25): lowering one weight
does not help, the stripes' curve is on/off too.
"""

from __future__ import annotations

import pytest

from lora_studio.core.models.tiny_shapes import quality, sample_data
from tiny_shapes_loras import (adapter_name, finish_training, start_training,
                               stripes_settings, studio_session, use_only)

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2, 3)
SIZES = sample_data.CONCEPTS["star"][3]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The Generate tab's session with both LoRAs loaded, and their adapter names."""
    root = tmp_path_factory.mktemp("loras")
    data = sample_data.write_concept_dataset(root / "stripes_data", "stripes")
    star = start_training(root / "star")
    stripes = start_training(root / "stripes", *stripes_settings(data))
    files = (finish_training(star, root / "star", "zqstar"),
             finish_training(stripes, root / "stripes", "zqstripe"))
    session = studio_session()
    return (session, *(adapter_name(session, f) for f in files))


def test_the_stripes_lora_alone_draws_stripes(studio):
    session, _, stripes = studio
    use_only(session, {stripes: 1.0})
    report = quality.concept_quality(session.pipeline, "zqstripe", "circle", "striped", SEEDS)
    rate = quality.concept_rate(report, None, "striped")
    print(f"\nstripes alone at 1.0: {rate:.2f}")
    assert rate >= 0.5


@pytest.mark.parametrize("star_weight, stripes_weight", [(1.0, 1.0), (1.0, 0.75)])
def test_a_star_lora_and_a_stripes_lora_compose(studio, star_weight, stripes_weight):
    session, star, stripes = studio
    use_only(session, {star: star_weight, stripes: stripes_weight})
    scenes = quality.concept_test_scenes("star", texture="striped", sizes=SIZES)
    prompts = [f"zqstar, zqstripe, {s.caption()}" for s in scenes]
    images = quality.render(session.pipeline, prompts, SEEDS)
    report = quality.score(scenes, images, len(SEEDS), texture=True)
    both = quality.concept_rate(report, "star", "striped")
    star_only = quality.concept_rate(report, "star", None)
    striped_only = quality.concept_rate(report, None, "striped")
    print(f"\nstacked star {star_weight:g} + stripes {stripes_weight:g}: both {both:.2f} "
          f"(star {star_only:.2f}, striped {striped_only:.2f})")
    assert both > 0.5
