"""GenerationSession on the tiny model: samplers, seeds, previews, cancel, LoRAs on sliders."""

from __future__ import annotations


import numpy as np
import pytest

from lora_files import make_lora_file

from lora_studio.core import events
from lora_studio.core.errors import ConfigError, LoraFormatError, StudioError
from lora_studio.core.generate.pnginfo import parse_parameters, read_png_parameters
from lora_studio.core.generate.session import (
    GenerationRequest,
    GenerationSession,
    adapter_name_for,
)
from lora_studio.core.jobs import JobControl

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 4




def pixels(result) -> np.ndarray:
    return np.asarray(result[0].image, dtype=np.int16)




@pytest.fixture(scope="module")
def session(tiny_model_dir):
    return GenerationSession(tiny_model_dir)


@pytest.fixture(scope="module")
def lora_files(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return (make_lora_file(tiny_model_dir, folder / "style.safetensors", seed=1),
            make_lora_file(tiny_model_dir, folder / "ink.v2.safetensors", seed=2))


@pytest.fixture
def lora_session(session):
    """The shared session, left with no LoRAs afterwards."""
    yield session
    for lora in session.loras:
        session.remove_lora(lora.name)


def render(session, prompt="a red circle", seed=7, **kw):
    return session.generate(GenerationRequest(prompt, steps=STEPS, seed=seed, **kw))


# ------------------------------------------------------------------ samplers, seeds
@pytest.mark.parametrize("sampler, cls", [
    ("Euler a", "EulerAncestralDiscreteScheduler"),
    ("Euler", "EulerDiscreteScheduler"),
    ("DPM++ 2M", "DPMSolverMultistepScheduler"),
    ("DPM++ 2M Karras", "DPMSolverMultistepScheduler"),
    ("DDIM", "DDIMScheduler"),
    ("UniPC", "UniPCMultistepScheduler"),
])
def test_sampler_generates_an_image_on_the_tiny_model(session, sampler, cls):
    (result,) = render(session, sampler=sampler)
    image = np.asarray(result.image)
    assert image.shape == (64, 64, 3)  # the tiny model's native size
    assert image.std() > 1  # a picture, not a flat fill
    assert type(session.pipeline.scheduler).__name__ == cls
    params = parse_parameters(result.parameters)
    name, _, schedule = sampler.partition(" Karras")
    assert params["sampler"] == name
    assert params["schedule_type"] == ("Karras" if "Karras" in sampler else None)
    assert (params["seed"], params["steps"], params["width"]) == (7, STEPS, 64)


def test_v_prediction_model_keeps_v_prediction_with_every_sampler(tiny_vpred_model_dir):
    vsession = GenerationSession(tiny_vpred_model_dir)
    render(vsession, sampler="DPM++ 2M Karras")
    assert vsession.pipeline.scheduler.config.prediction_type == "v_prediction"


def test_same_seed_same_pixels_different_seed_different(session):
    a = pixels(render(session, seed=123, sampler="Euler a"))
    b = pixels(render(session, seed=123, sampler="Euler a"))
    c = pixels(render(session, seed=124, sampler="Euler a"))
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1


def test_batch_image_i_uses_seed_plus_i(session):
    batch = render(session, seed=40, count=2, sampler="Euler")
    assert [r.seed for r in batch] == [40, 41]
    alone = render(session, seed=41, sampler="Euler")
    assert np.array_equal(np.asarray(batch[1].image), np.asarray(alone[0].image))
    assert "Seed: 41," in batch[1].parameters


def test_random_seed_is_reported_and_reproduces(session):
    (first,) = render(session, seed=None, sampler="Euler")
    assert f"Seed: {first.seed}," in first.parameters
    again = render(session, seed=first.seed, sampler="Euler")
    assert np.array_equal(np.asarray(first.image), pixels(again))


def test_steps_emit_previews_and_the_run_finishes(session, tmp_path):
    seen = []
    session.generate(GenerationRequest("a cat", steps=3, seed=1, out_dir=tmp_path),
                     emit=seen.append)
    steps = [e for e in seen if isinstance(e, events.GenerationStep)]
    assert [(e.step, e.total_steps) for e in steps] == [(1, 3), (2, 3), (3, 3)]
    assert steps[0].image.size == (32, 32) and steps[0].image.mode == "RGB"  # latent preview
    (done,) = [e for e in seen if isinstance(e, events.ImageGenerated)]
    assert done.path == tmp_path / "00000-1.png" and done.path.is_file()
    assert isinstance(seen[0], events.JobStarted) and isinstance(seen[-1], events.Finished)
    assert parse_parameters(read_png_parameters(done.path))["seed"] == 1


def test_files_are_numbered_after_existing_ones(session, tmp_path):
    (tmp_path / "00041-5.png").write_bytes(b"")
    results = session.generate(GenerationRequest("a cat", steps=1, seed=9, count=2,
                                                 out_dir=tmp_path))
    assert [r.path.name for r in results] == ["00042-9.png", "00043-10.png"]


def test_cancel_from_the_step_callback_stops_within_one_step(session, tmp_path):
    control = JobControl()
    seen = []
    unet_calls = []
    hook = session.pipeline.unet.register_forward_hook(lambda *a: unet_calls.append(1))

    def emit(event):
        seen.append(event)
        if isinstance(event, events.GenerationStep) and event.step == 2:
            control.cancel()

    try:
        results = session.generate(GenerationRequest("a cat", steps=20, seed=1, count=3,
                                                     out_dir=tmp_path), emit=emit, control=control)
    finally:
        hook.remove()
    assert results == []
    assert len(unet_calls) == 2  # the UNet ran for steps 1 and 2 only, of 3 x 20
    assert max(e.step for e in seen if isinstance(e, events.GenerationStep)) == 2
    assert isinstance(seen[-1], events.Cancelled)
    assert not any(isinstance(e, (events.ImageGenerated, events.Finished)) for e in seen)
    assert list(tmp_path.iterdir()) == []  # nothing half-finished saved


def test_bad_requests_are_user_errors(session):
    with pytest.raises(ConfigError, match="width"):
        render(session, width=60)
    with pytest.raises(ConfigError, match="steps"):
        session.generate(GenerationRequest("a cat", steps=0))
    with pytest.raises(StudioError, match="Unknown sampler"):
        render(session, sampler="Euler z")


# ------------------------------------------------------------------ LoRAs
def test_lora_weights_change_the_image_without_reloading(lora_session, lora_files):
    session, (style, _) = lora_session, lora_files
    pipe, unet = session.pipeline, session.pipeline.unet
    base = pixels(render(session))

    report = session.add_lora(style, weight=1.0)
    # 4 transformer blocks x (attn1, attn2) x (to_q, to_k, to_v, to_out.0)
    assert (report.adapter_name, report.matched, report.total) == ("style", 32, 32)
    full = pixels(render(session))
    assert np.abs(full - base).mean() > 1  # the LoRA does something visible

    session.set_weight("style", 0.5)
    half = pixels(render(session))
    assert np.abs(half - base).mean() > 0.5 and np.abs(half - full).mean() > 0.5

    session.set_weight("style", 0.0)
    assert np.array_equal(pixels(render(session)), base)  # weight 0 = the base model

    session.set_weight("style", 1.0)
    assert np.array_equal(pixels(render(session)), full)  # absolute, not compounding

    session.remove_lora("style")
    assert np.array_equal(pixels(render(session)), base)
    assert session.pipeline is pipe and session.pipeline.unet is unet  # never reloaded
    assert session.loras == []


def test_disabled_lora_renders_as_if_removed(lora_session, lora_files):
    session, (style, ink) = lora_session, lora_files
    session.add_lora(style, weight=0.8)
    only_style = pixels(render(session))
    session.add_lora(ink, weight=1.0)
    assert [lo.name for lo in session.loras] == ["style", "ink_v2"]  # peft-safe: no dots
    both = pixels(render(session))
    assert np.abs(both - only_style).mean() > 1

    session.set_enabled("ink_v2", False)
    assert np.array_equal(pixels(render(session)), only_style)
    session.set_enabled("ink_v2", True)
    assert np.array_equal(pixels(render(session)), both)
    session.set_enabled("style", False)
    session.set_enabled("ink_v2", False)
    session.remove_lora("style")
    session.remove_lora("ink_v2")
    base = pixels(render(session))
    session.add_lora(ink)
    session.set_enabled("ink_v2", False)
    assert np.array_equal(pixels(render(session)), base)


def test_prompt_tag_sets_the_weight_for_one_generation(lora_session, lora_files):
    session, (style, _) = lora_session, lora_files
    base = pixels(render(session, prompt="a red circle"))
    session.add_lora(style, weight=1.0)
    full = pixels(render(session, prompt="a red circle"))
    (tagged,) = render(session, prompt="a red circle, <lora:style:0>")
    assert np.array_equal(pixels([tagged]), base)  # tag removed from the text, weight 0 used
    assert "<lora:style:0>" in tagged.parameters
    assert np.array_equal(pixels(render(session, prompt="a red circle")), full)  # restored
    assert session.loras[0].weight == 1.0

    seen = []
    session.generate(GenerationRequest("a cat <lora:nothere:1>", steps=1, seed=1),
                     emit=seen.append)
    assert isinstance(seen[0], events.JobStarted)
    assert any(isinstance(e, events.Log) and "nothere" in e.message for e in seen)


def test_lora_listing_and_png_info(lora_session, lora_files, tmp_path):
    from lora_studio.core.lora.hashing import short_hash

    session, (style, ink) = lora_session, lora_files
    session.add_lora(style, weight=0.7)
    session.add_lora(ink, weight=1.0, name="ink")
    listed = {lo.name: lo for lo in session.loras}
    assert listed["style"].path == style and listed["style"].weight == 0.7
    assert listed["style"].enabled and listed["style"].short_hash == short_hash(style)
    assert listed["ink"].report.matched == 32
    (result,) = render(session, out_dir=tmp_path)
    params = parse_parameters(read_png_parameters(result.path))
    assert params["prompt"] == "a red circle, <lora:style:0.7>, <lora:ink.v2:1>"
    assert params["loras"] == [
        {"name": "style", "weight": 0.7, "te_weight": None, "lbw": None,
         "hash": short_hash(style)},
        {"name": "ink.v2", "weight": 1.0, "te_weight": None, "lbw": None,
         "hash": short_hash(ink)},
    ]
    assert params["model"] == session.model_name and len(params["model_hash"]) == 10


def test_a_lora_started_late_is_off_for_its_first_steps(lora_session, lora_files, tmp_path):
    session, (style, ink) = lora_session, lora_files
    session.add_lora(style, weight=1.0)
    session.add_lora(ink, weight=1.0, name="ink")
    session.set_enabled("ink", False)
    switched = []  # the adapters on, each time the session sets them
    apply = session._scales.apply
    session._scales.apply = lambda active: (switched.append([a[0] for a in active]),
                                            apply(active))[1]
    try:
        full = pixels(render(session))
        session.set_start("style", 0.5)  # on from step 2 of STEPS (4)
        (late,) = render(session, out_dir=tmp_path)
    finally:
        session._scales.apply = apply
    # per render: the first step's set, then (late only) the switch before step 2, then the
    # session's own set restored
    assert switched == [["style"], ["style"], [], ["style"], ["style"]]
    session.set_enabled("style", False)
    base = pixels(render(session))
    # on for the last two steps only: the image moves off the base, far from the full LoRA's
    assert 0 < np.abs(pixels([late]) - base).mean() < np.abs(pixels([late]) - full).mean()
    assert parse_parameters(read_png_parameters(late.path))["extra"]["Lora starts"] == "style: 0.5"
    with pytest.raises(ConfigError):
        session.set_start("style", 1.0)


def test_kohya_lora_with_text_encoder_follows_the_slider_in_both_parts(lora_session,
                                                                      tiny_model_dir, tmp_path):
    """A kohya-layout file (what A1111 users have) training UNet + text encoder, alpha != rank:
    weight 0 must switch off the text-encoder part too, or the image would not be the base."""
    from lora_studio.core.lora.formats import write_lora
    from lora_studio.core.lora.testing import make_random_lora

    path = tmp_path / "kohya_style.safetensors"
    write_lora(make_random_lora(tiny_model_dir, rank=4, alpha=2.0, seed=5), path, layout="kohya")
    session = lora_session
    base = pixels(render(session))
    report = session.add_lora(path, weight=1.0)
    assert report.matched == report.total > 32  # UNet and text-encoder modules all matched
    assert np.abs(pixels(render(session)) - base).mean() > 1
    session.set_weight("kohya_style", 0.0)
    assert np.array_equal(pixels(render(session)), base)


def test_unknown_names_and_bad_files_are_user_errors(lora_session, tmp_path):
    with pytest.raises(StudioError, match="nope"):
        lora_session.set_weight("nope", 1.0)
    with pytest.raises(StudioError):
        lora_session.remove_lora("nope")
    with pytest.raises(LoraFormatError):
        lora_session.add_lora(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(LoraFormatError):
        lora_session.add_lora(junk)
    assert lora_session.loras == []


def test_adapter_names_are_peft_safe_and_unique():
    assert adapter_name_for("my.style v2", set()) == "my_style_v2"
    assert adapter_name_for("style", {"style", "style_2"}) == "style_3"
    assert adapter_name_for("...", set()) == "lora"
