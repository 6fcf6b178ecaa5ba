"""Issue 4's LoRA targets, measured: does a LoRA trained with the app's default settings teach
Tiny Shapes a new concept? NOT YET MET (see the README's Tiny Shapes section), so this lives with
the benchmarks (not collected by the suite) until the recipe reaches them; then it moves to
tests/e2e/. Run: `python -m pytest tests/benchmarks/tiny_shapes_lora_quality.py -s` (~10 min on
2 cores: two trainings, then ~1,000 scored renders).

The star LoRA is trained on the shipped sample dataset with the quickstart preset (= the Train
tab's defaults), the stripes LoRA with the same settings on the striped-texture concept set;
then the studio's own session loads the exported files and the scorer reads what is drawn on
fixed seeds. A regression in training, export, loading, stacking or generation shows up here as
a quality drop, not only as a crash. The measured numbers are printed (`-s`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_studio.core.models.tiny_shapes import quality, sample_data

pytestmark = pytest.mark.slow
SEEDS = (0, 1)
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
QUICKSTART = Path(__file__).resolve().parents[2] / "resources/presets/quickstart.toml"


def _train(out, **overrides) -> str:
    from lora_studio.core.train.config import load_config
    from lora_studio.core.train.trainer import run_training_job

    sets = [f"output.path={out}", "sample.every=0", "checkpoint.every=0"]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(QUICKSTART, sets)
    events = []
    terminal = run_training_job(cfg, events.append)
    assert type(terminal).__name__ == "Finished", terminal
    return str(cfg.lora_path)


@pytest.fixture(scope="module")
def star_lora(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("star"))


@pytest.fixture(scope="module")
def stripes_lora(tmp_path_factory):
    data = sample_data.write_concept_dataset(tmp_path_factory.mktemp("data") / "stripes",
                                             "stripes")
    return _train(tmp_path_factory.mktemp("stripes"), **{
        "dataset.path": data, "dataset.trigger_word": "zqstripe",
        "dataset.default_caption": "zqstripe", "output.name": "zqstripe",
        # false: flipped diagonal stripes average out to faint ones (see sample_data)
        "dataset.random_flip": str(sample_data.mirror_safe("stripes")).lower()})


@pytest.fixture(scope="module")
def session():
    import torch

    from lora_studio.core.generate.session import GenerationSession

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    s = GenerationSession(None, device="cpu")  # the built-in model, as the app uses it
    s.pipeline.set_progress_bar_config(disable=True)
    yield s
    torch.set_num_threads(before)


def _only(session, weights: dict[str, float]) -> None:
    """The session's stack: the named LoRAs at these strengths, every other one off."""
    for lora in session.loras:
        session.set_enabled(lora.name, lora.name in weights)
        if lora.name in weights:
            session.set_weight(lora.name, weights[lora.name])


def _name(session, path: str) -> str:
    """The adapter name of the LoRA file, loaded into the session on first use."""
    for lora in session.loras:
        if Path(lora.path).resolve() == Path(path).resolve():
            return lora.name
    session.add_lora(path)
    return session.loras[-1].name


@pytest.fixture(scope="module")
def star_curve(session, star_lora):
    name = _name(session, star_lora)
    reports = {}
    for strength in STRENGTHS:
        _only(session, {name: strength})
        reports[strength] = quality.concept_quality(session.pipeline, "zqstar", "star",
                                                    seeds=SEEDS)
    rates = {s: quality.concept_rate(r, "star") for s, r in reports.items()}
    print("\nstar rate by strength: " + ", ".join(f"{s:g}: {r:.2f}" for s, r in rates.items()))
    return rates, reports


def test_the_trigger_prompt_shows_the_star_at_1_and_not_at_0(star_curve):
    rates, _ = star_curve
    assert rates[1.0] >= 0.8, rates
    assert rates[0.0] <= 0.1, rates


def test_the_effect_grows_with_strength(star_curve):
    rates, _ = star_curve
    values = [rates[s] for s in STRENGTHS[:5]]
    assert all(b >= a - 0.05 for a, b in zip(values, values[1:])), rates  # no real dips
    # not an on/off switch: some strength in between gives part of the effect
    assert any(0.1 < rates[s] < 0.8 for s in (0.25, 0.5, 0.75)), rates


def test_the_star_follows_the_prompt_not_one_training_picture(star_curve):
    _, reports = star_curve
    report = reports[1.0]
    scenes = quality.concept_test_scenes("star")
    trained = {(s.color, s.background) for s in sample_data.concept_scenes("star")}
    pairs = [(r, scenes[i // len(SEEDS)]) for i, r in enumerate(report.readings)]
    unseen = [(r, s) for r, s in pairs if (s.color, s.background) not in trained]
    assert len(unseen) >= 10  # the sample set leaves several color x background pairs out
    color = sum(r.color == s.color for r, s in unseen) / len(unseen)
    background = sum(r.background == s.background for r, s in unseen) / len(unseen)
    stars = sum(r.shape == "star" for r, _ in unseen) / len(unseen)
    print(f"\nunseen color x background pairs: star {stars:.2f}, color {color:.2f}, "
          f"background {background:.2f}")
    assert color >= 0.9 and background >= 0.9
    assert stars >= 0.7


def test_prompts_without_the_trigger_keep_their_base_quality(session, star_lora):
    name = _name(session, star_lora)
    _only(session, {})
    base = quality.base_quality(session.pipeline, SEEDS)
    _only(session, {name: 1.0})
    with_lora = quality.base_quality(session.pipeline, SEEDS)
    print(f"\nbase prompts without the LoRA: {base.line()}\nwith the LoRA at 1.0: "
          f"{with_lora.line()}")
    assert with_lora.rates["all"] >= 0.85 * base.rates["all"]


def test_a_star_lora_and_a_stripes_lora_compose(session, star_lora, stripes_lora):
    star, stripes = _name(session, star_lora), _name(session, stripes_lora)
    _only(session, {star: 1.0, stripes: 1.0})
    scenes = quality.concept_test_scenes("star", texture="striped")
    prompts = [f"zqstar, zqstripe, {s.caption()}" for s in scenes]
    images = quality.render(session.pipeline, prompts, SEEDS)
    report = quality.score(scenes, images, len(SEEDS), texture=True)
    both = quality.concept_rate(report, "star", "striped")
    star_only = quality.concept_rate(report, "star", None)
    striped_only = quality.concept_rate(report, None, "striped")
    print(f"\nstacked star + stripes: both {both:.2f} (star {star_only:.2f}, striped "
          f"{striped_only:.2f})")
    assert both > 0.5
