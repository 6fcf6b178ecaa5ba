"""`<lora:...>` tags beyond one weight (issue 23): A1111's separate text-encoder / UNet weights
(`<lora:name:te:unet>`, `te=` / `unet=`) and sd-webui-loractl's per-step keyframes
(`<lora:name:1@0,0.2@0.5>`), for PEFT LoRAs and LyCORIS networks, on the tiny SD 1.x model.

Text-encoder / UNet weights are checked against files that hold only one part of the same LoRA:
a LoRA at te w, unet 0 must render exactly what its text-encoder part alone renders at w.
Keyframes are checked against loractl's own numbers (its test cases), against "Starts at" (the
step-wise case) and against a render that switches the weights by hand at every step.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from lycoris_files import loha, te, unet, write_network
from safetensors.torch import load_file, save_file

from lora_studio.core.generate.pnginfo import parse_parameters, parse_prompt_loras
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.core.generate.strength_schedule import StrengthSchedule

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")]

STEPS = 4
PROMPT = "a red star on a blue background"


# ----------------------------------------------------------------------------- no model
@pytest.mark.parametrize("text, sampling_step, steps, weight", [
    # loractl's own cases (test/tests.py: calculate_weight(steps, step, 30))
    ("0.75@0;0.5@3;1@6", 0, 30, 0.75), ("0.75@0;0.5@3;1@6", 3, 30, 0.5),
    ("0.75@0;0.5@3;1@6", 6, 30, 1.0), ("0.75@0;0.5@3;1@6", 9, 30, 1.0),
    ("0.5@5,1.0@10", 0, 30, 0.5), ("0.5@5,1.0@10", 5, 30, 0.5),
    ("0.5@5,1.0@10", 8, 30, 0.8), ("0.5@5,1.0@10", 15, 30, 1.0),
    # shares of the run: A1111's counter over steps - 2
    ("0@0,1@1", 5, 12, 0.5), ("1@0.5,0@0", 9, 20, 1.0), ("1~0,0~1", 0, 20, 1.0),
])
def test_keyframes_give_loractls_weights(text, sampling_step, steps, weight):
    assert StrengthSchedule.parse(text).value(sampling_step, steps) == pytest.approx(weight)


def test_a_denoising_step_reads_a1111s_counter_one_step_behind():
    # A1111 sets the counter to i after step i: steps 0 and 1 both read 0; the last reads 1.0
    ramp = StrengthSchedule.parse("0@0,1@1")
    assert [ramp.at_step(k, 6) for k in range(6)] == [0, 0, 0.25, 0.5, 0.75, 1]
    assert [StrengthSchedule.parse("0@0,1@0.5").at_step(k, 4) for k in range(4)] == [0, 0, 1, 1]
    assert [StrengthSchedule.parse("0@1,1@3").at_step(k, 5) for k in range(5)] == \
        [0, 0, 0, 0.5, 1]  # absolute steps (the largest is above 1)
    assert StrengthSchedule.parse("0@0,1@1").at_step(1, 2) == 0  # loractl divides by zero


@pytest.mark.parametrize("tag, weight, te_weight, schedule, te_schedule", [
    ("<lora:x:0.3:0.9>", 0.9, 0.3, None, None),
    ("<lora:x:te=0.5:unet=1>", 1.0, 0.5, None, None),
    ("<lora:x:unet=0.25>", 0.25, 1.0, None, None),
    ("<lora:x:1@0,0.2@0.5>", 1.0, None, "1@0,0.2@0.5", None),
    ("<lora:x:0.5:0@0,1@0.5>", 0.0, 0.5, "0@0,1@0.5", None),
    ("<lora:x:te=0@0,1@1>", 0.0, 0.0, "0@0,1@1", "0@0,1@1"),  # unet follows te (loractl)
])
def test_tags_read_text_encoder_unet_and_keyframes(tag, weight, te_weight, schedule,
                                                   te_schedule):
    clean, (found,) = parse_prompt_loras(f"a cat, {tag}, hat")
    assert clean == "a cat, hat"
    assert (found.weight, found.te_weight, found.lbw) == (weight, te_weight, None)
    assert (found.schedule.text if found.schedule else None) == schedule
    assert (found.te_schedule.text if found.te_schedule else None) == te_schedule


# ----------------------------------------------------------------------------- renders
@pytest.fixture(scope="module")
def session(tiny_model_dir, tmp_path_factory):
    """A session holding (switched off) a kohya LoRA with UNet + text-encoder parts, each part
    alone, a LoHa network with both parts and each part alone."""
    from lora_studio.core.lora.formats import write_lora
    from lora_studio.core.lora.testing import make_random_lora

    folder = tmp_path_factory.mktemp("tag_weights")
    lora = make_random_lora(tiny_model_dir, rank=4, alpha=2.0, seed=5)
    parts = {"both": lora.modules, "te_part": lora.component_modules("text_encoder"),
             "unet_part": lora.component_modules("unet")}
    session = GenerationSession(tiny_model_dir)
    for name, modules in parts.items():
        path = folder / f"{name}.safetensors"
        write_lora(replace(lora, modules=dict(modules)), path, layout="kohya")
        session.add_lora(path, weight=1.0)
        session.set_enabled(name, False)
    both = folder / "loha_both.safetensors"
    write_network(both, (unet("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                              loha()),
                         unet("up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", loha()),
                         te("lora_te_", "text_encoder", "encoder.layers.0.self_attn.q_proj",
                            loha()),
                         te("lora_te_", "text_encoder", "encoder.layers.1.mlp.fc1", loha())),
                  session.pipeline, seed=3)
    tensors = load_file(str(both))
    for name, prefix in (("loha_te", "lora_te_"), ("loha_unet", "lora_unet_")):
        save_file({k: v for k, v in tensors.items() if k.startswith(prefix)},
                  str(folder / f"{name}.safetensors"), metadata={"format": "pt"})
    for name in ("loha_both", "loha_te", "loha_unet"):
        session.add_lora(folder / f"{name}.safetensors", weight=1.0)
        session.set_enabled(name, False)
    return session


def render(session, prompt: str, **kw):
    (result,) = session.generate(GenerationRequest(prompt, steps=STEPS, cfg=5.0, seed=11,
                                                   sampler="Euler", **kw))
    return result


def pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


@pytest.mark.parametrize("both, te_only, unet_only", [
    ("both", "te_part", "unet_part"), ("loha_both", "loha_te", "loha_unet")])
def test_text_encoder_and_unet_weights_apply_to_their_own_parts(session, both, te_only,
                                                                unet_only):
    base = pixels(render(session, PROMPT))
    te_weighted = pixels(render(session, f"{PROMPT}, <lora:{both}:0.6:0>"))
    assert np.array_equal(te_weighted, pixels(render(session, f"{PROMPT}, <lora:{te_only}:0.6>")))
    assert np.abs(te_weighted - base).max() > 0  # the text-encoder part did something
    named = pixels(render(session, f"{PROMPT}, <lora:{both}:te=0:unet=0.7>"))
    assert np.array_equal(named, pixels(render(session, f"{PROMPT}, <lora:{unet_only}:0.7>")))
    whole = pixels(render(session, f"{PROMPT}, <lora:{both}:0.6>"))
    assert not np.array_equal(whole, te_weighted) and not np.array_equal(whole, named)


def test_keyframes_that_step_render_what_starts_at_renders(session, tmp_path):
    session.set_enabled("both", True)
    session.set_start("both", 0.5)  # on from step 2 of 4
    try:
        late = pixels(render(session, PROMPT))
    finally:
        session.set_start("both", 0.0)
        session.set_enabled("both", False)
    stepped = render(session, f"{PROMPT}, <lora:both:0@0,1@0.5>", out_dir=tmp_path)
    assert np.array_equal(pixels(stepped), late)
    full = pixels(render(session, f"{PROMPT}, <lora:both:1>"))
    assert not np.array_equal(late, full) and not np.array_equal(
        late, pixels(render(session, PROMPT)))
    params = parse_parameters(stepped.parameters)  # PNG info keeps the tag as written
    assert params["prompt"] == f"{PROMPT}, <lora:both:0@0,1@0.5>"
    assert "Lora starts" not in params["extra"]


def test_a_ramp_renders_what_switching_the_weights_by_hand_renders(session):
    """`1@0,0@1` over 4 steps: A1111's counter reads 0, 0, 1, 2 of 2 -> weights 1, 1, 0.5, 0."""
    from lora_studio.core.generate.decode import decode_latents
    from lora_studio.core.generate.samplers import make_scheduler

    ramp = pixels(render(session, f"{PROMPT}, <lora:unet_part:1@0,0@1>"))
    by_hand = [1.0, 1.0, 0.5, 0.0]
    pipe = session.pipeline
    with session._lock:
        pipe.scheduler = make_scheduler(session._base_scheduler_config, "Euler", None)
        pipe.enable_lora()  # the session switched the LoRA layers off after its last render
        pipe.set_adapters(["unet_part"], [by_hand[0]])

        def switch(pipe, step, timestep, kwargs):
            if step + 1 < STEPS:
                pipe.set_adapters(["unet_part"], [by_hand[step + 1]])
            return kwargs

        latents = pipe(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=5.0,
                       width=64, height=64, generator=torch.Generator("cpu").manual_seed(11),
                       callback_on_step_end=switch, output_type="latent").images
        reference = np.asarray(decode_latents(pipe, latents)[0], dtype=np.int16)
        session._scales.reset()  # the adapters were set behind the session's back
    assert np.array_equal(ramp, reference)
    constant = pixels(render(session, f"{PROMPT}, <lora:unet_part:1>"))
    assert not np.array_equal(ramp, constant)


def test_a_grid_renders_keyframed_tags_of_its_prompt(session):
    from lora_studio.core.generate.grid import GridAxis, strength_grid

    prompt = f"{PROMPT}, <lora:unet_part:0@0,1@0.5>"
    session.set_enabled("te_part", True)
    try:
        grid = strength_grid(session, GenerationRequest(prompt, steps=STEPS, cfg=5.0, seed=11,
                                                        sampler="Euler"),
                             GridAxis("te_part", [0.6]))
        session.set_weight("te_part", 0.6)
        expected = pixels(render(session, prompt))
        unscheduled = pixels(render(session, PROMPT))
    finally:
        session.set_enabled("te_part", False)
        session.set_weight("te_part", 1.0)
    assert np.array_equal(np.asarray(grid.cells[0][0], dtype=np.int16), expected)
    assert not np.array_equal(expected, unscheduled)  # the keyframed LoRA came in
