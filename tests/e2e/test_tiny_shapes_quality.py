"""The shipped Tiny Shapes model, read by the scorer on fixed seeds: it draws what it is asked
(every color x shape x size x background prompt), loads in plain diffusers, and has never seen
the sample dataset's star. A regression in loading or generation shows up here as a quality
drop, not only as a crash. The measured rates are printed (`-s`)."""

from __future__ import annotations

import pytest

from lora_studio.core.models.tiny import shipped_tiny_shapes_dir
from lora_studio.core.models.tiny_shapes import quality, world

pytestmark = pytest.mark.slow
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def pipe():
    import torch

    from lora_studio.core.models.loading import load_pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    pipe = load_pipeline(shipped_tiny_shapes_dir())
    pipe.set_progress_bar_config(disable=True)
    yield pipe
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_report(pipe):
    return quality.base_quality(pipe, SEEDS)


def test_the_shipped_model_draws_every_prompt(base_report):
    print(f"\nbase quality: {base_report.line()}")
    rates = base_report.rates
    assert rates["color"] >= 0.95 and rates["shape"] >= 0.95 and rates["all"] >= 0.9


def test_plain_diffusers_loads_it_and_draws_fast():
    import time

    import torch
    from diffusers import StableDiffusionPipeline

    from lora_studio.core.models.tiny_shapes.scorer import read_picture

    pipe = StableDiffusionPipeline.from_pretrained(shipped_tiny_shapes_dir())
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    image = pipe("a large blue square on a white background", num_inference_steps=20,
                 guidance_scale=5.0, generator=torch.Generator().manual_seed(0)).images[0]
    print(f"\none 20-step image: {time.perf_counter() - started:.2f} s")
    reading = read_picture(image)
    assert (reading.shape, reading.color, reading.background) == ("square", "blue", "white")


def test_the_sample_dataset_is_the_concept_the_base_never_saw(base_report):
    assert all(reading.shape != "star" for reading in base_report.readings)
    assert {s.shape for s in world.base_scenes()}.isdisjoint(world.CONCEPT_SHAPES)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M Karras"])
def test_the_studio_draws_it_with_a1111_samplers(sampler):
    """What the Generate tab does: the session on the built-in model, A1111 sampler names."""
    from lora_studio.core.generate.session import GenerationRequest, GenerationSession
    from lora_studio.core.models.tiny_shapes.scorer import read_picture

    session = GenerationSession(None)
    scenes = world.base_scenes()[::15]
    right = 0
    for i, scene in enumerate(scenes):
        (image,) = session.generate(GenerationRequest(scene.caption(), steps=20, cfg=5.0,
                                                      seed=i, sampler=sampler))
        right += read_picture(image.image).matches(scene)["all"]
    assert right >= len(scenes) - 1, f"{right} of {len(scenes)} right with {sampler}"


def test_the_eval_command_reports_how_much_a_lora_bleeds(tmp_path, capsys):
    """`tiny-shapes eval --lora F --bleed`: the world's prompts without the trigger word, scored
    with the LoRA off and at 1.0. A LoRA of random noise must show up as a loss of quality."""
    import json

    from safetensors.torch import load_file, save_file

    from lora_studio.cli import main
    from lora_files import ATTENTION, make_lora_file

    noise = make_lora_file(shipped_tiny_shapes_dir(), tmp_path / "noise.safetensors", seed=0,
                           targets=ATTENTION + ("conv1", "conv2"))
    # loud noise: every picture of the world's prompts must suffer from it
    save_file({k: v * 4 if "lora_B" in k else v for k, v in load_file(noise).items()},
              str(noise))
    assert main(["tiny-shapes", "eval", "--lora", str(noise), "--strengths", "1",
                 "--seeds", "0", "--bleed", "--json"]) == 0
    out = capsys.readouterr().out
    bleed = json.loads(out[out.index("\n{") + 1:])["bleed"]
    print(f"\nrandom-noise LoRA: base {bleed['off']['all']:.2f}, with it "
          f"{bleed['on']['all']:.2f}")
    assert bleed["off"]["all"] >= 0.9  # LoRA off: the base model's own quality
    assert bleed["on"]["all"] < 0.5 * bleed["off"]["all"]
    assert bleed["kept"] == pytest.approx(bleed["on"]["all"] / bleed["off"]["all"])
    assert "kept" in out.splitlines()[1]


def test_the_eval_command_says_bleed_needs_a_lora(capsys):
    from lora_studio.cli import main

    assert main(["tiny-shapes", "eval", "--bleed"]) == 2
    assert "--lora" in capsys.readouterr().err  # the CLI's own "error: ..." line
