"""Block weights live on the tiny model: what the image does, PEFT's per-layer scales, prompt
tags with `lbw=`, PNG info A1111 can re-use, and LoCon convs outside the transformer blocks."""

from __future__ import annotations

import numpy as np
import pytest

from lora_files import make_lora_file

from lora_studio.core import events
from lora_studio.core.errors import StudioError
from lora_studio.core.generate.pnginfo import parse_parameters
from lora_studio.core.generate.session import GenerationRequest, GenerationSession
from lora_studio.core.lora.block_weights import BlockWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Distinct factors: BASE 0.1, IN01 0.2, ..., MID 0.8, OUT03 0.9, ..., OUT09 1.5, OUT10 1.6, ...
DISTINCT = BlockWeights(tuple(round(0.1 * (i + 1), 1) for i in range(17)))
MID_ONLY = BlockWeights.parse("NONE").replaced("MID", 1.0)


def pixels(results) -> np.ndarray:
    return np.asarray(results[0].image, dtype=np.int16)


def render(session, prompt="a red circle", **kw):
    return session.generate(GenerationRequest(prompt, steps=4, seed=7, **kw))


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    return GenerationSession(tiny_model_dir)


@pytest.fixture(scope="module")
def kohya_file(tiny_model_dir, tmp_path_factory):
    """What A1111 users have: kohya layout, UNet + text encoder, alpha != rank."""
    from lora_studio.core.lora.formats import write_lora
    from lora_studio.core.lora.testing import make_random_lora

    path = tmp_path_factory.mktemp("bw") / "kstyle.safetensors"
    return write_lora(make_random_lora(tiny_model_dir, rank=4, alpha=2.0, seed=5), path,
                      layout="kohya")


@pytest.fixture
def styled(session, kohya_file):
    """The session with the kohya LoRA at 1.0, left without LoRAs afterwards."""
    session.add_lora(kohya_file, weight=1.0)
    yield session
    for lora in session.loras:
        session.remove_lora(lora.name)


def relative_scales(model, adapter: str) -> dict[str, float]:
    """module name -> the strength PEFT applies (its scaling over alpha / r)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: m.scaling[adapter] / (m.lora_alpha[adapter] / m.r[adapter])
            for name, m in model.named_modules()
            if isinstance(m, BaseTunerLayer) and adapter in m.scaling}


def test_block_weights_change_the_image_and_all_zero_is_the_base(session, kohya_file):
    base = pixels(render(session))
    session.add_lora(kohya_file, weight=1.0)
    try:
        full = pixels(render(session))
        session.set_block_weights("kstyle", MID_ONLY)
        mid_only = pixels(render(session))
        assert np.abs(mid_only - full).mean() > 0.5  # the other blocks' part is gone
        assert np.abs(mid_only - base).mean() > 0.5  # the middle block's part stays
        session.set_block_weights("kstyle", BlockWeights.parse("NONE"))  # text encoder too
        assert np.abs(pixels(render(session)) - base).max() <= 1
        session.set_block_weights("kstyle", None)
        assert np.array_equal(pixels(render(session)), full)
        session.set_block_weights("kstyle", BlockWeights.ones())
        assert session.loras[0].block_weights is None  # all ones = none
    finally:
        session.remove_lora("kstyle")


def test_peft_scales_follow_the_blocks_and_the_strength(styled):
    pipe = styled.pipeline
    styled.set_weight("kstyle", 0.5)
    styled.set_block_weights("kstyle", DISTINCT)
    unet = relative_scales(pipe.unet, "kstyle")
    expected = {"down_blocks.0.attentions.0.": "IN01", "mid_block.attentions.0.": "MID",
                "up_blocks.1.attentions.0.": "OUT09", "up_blocks.1.attentions.1.": "OUT10"}
    for prefix, block in expected.items():
        got = {round(v, 6) for name, v in unet.items() if name.startswith(prefix)}
        assert got == {round(0.5 * DISTINCT[block], 6)}, prefix
    assert set(unet) == {n for n in unet if n.startswith(tuple(expected))}  # none left over
    text = relative_scales(pipe.text_encoder, "kstyle")
    assert text and {round(v, 6) for v in text.values()} == {round(0.5 * DISTINCT["BASE"], 6)}

    styled.set_block_weights("kstyle", None)
    assert {round(v, 6) for v in relative_scales(pipe.unet, "kstyle").values()} == {0.5}


def test_a_prompt_tag_with_lbw_sets_block_weights_for_one_render(session, kohya_file):
    base = pixels(render(session))
    session.add_lora(kohya_file, weight=1.0)
    try:
        full = pixels(render(session))
        (tagged,) = render(session, prompt="a red circle, <lora:kstyle:1:lbw=NONE>")
        assert np.abs(pixels([tagged]) - base).max() <= 1
        assert tagged.parameters.split("\n")[0] == "a red circle, <lora:kstyle:1:lbw=NONE>"
        assert parse_parameters(tagged.parameters)["loras"][0]["lbw"] == "NONE"
        older = render(session, prompt="a red circle, <lora:kstyle:1:NONE>")  # LBW's old form
        assert np.array_equal(pixels(older), pixels([tagged]))
        assert np.array_equal(pixels(render(session)), full)  # the session's own setting is back
    finally:
        session.remove_lora("kstyle")


def test_png_info_carries_lbw_and_re_renders_the_same(styled):
    styled.set_weight("kstyle", 0.8)
    styled.set_block_weights("kstyle", BlockWeights.parse("OUTALL"))
    (first,) = render(styled)
    params = parse_parameters(first.parameters)
    assert params["prompt"] == "a red circle, <lora:kstyle:0.8:lbw=OUTALL>"
    assert params["loras"][0]["lbw"] == "OUTALL"

    styled.set_weight("kstyle", 1.0)
    styled.set_block_weights("kstyle", None)  # the tag alone must reproduce the picture
    again = render(styled, prompt=params["prompt"])
    assert np.array_equal(pixels(again), pixels([first]))
    assert styled.loras[0].block_weights is None  # the tag was for that render only

    custom = DISTINCT
    styled.set_block_weights("kstyle", custom)
    (numbered,) = render(styled)
    assert f"<lora:kstyle:1:lbw={custom.numbers()}>" in numbered.parameters


def test_a_tag_without_lbw_renders_every_block_and_says_so(styled):
    full = pixels(render(styled))
    styled.set_block_weights("kstyle", MID_ONLY)
    seen = []
    results = styled.generate(GenerationRequest("a red circle, <lora:kstyle:1>", steps=4,
                                                seed=7), emit=seen.append)
    assert np.array_equal(pixels(results), full)
    assert any(isinstance(e, events.Log) and "lbw=" in e.message for e in seen)


def test_an_unreadable_lbw_in_a_tag_is_a_user_error(styled):
    with pytest.raises(StudioError, match="kstyle.*got 3"):
        render(styled, prompt="a cat <lora:kstyle:1:lbw=1,0,1>")


@pytest.mark.parametrize("targets", [
    ("to_q", "conv1", "conv2", "conv"),  # a LoCon: resnets and samplers
    ("to_q", "conv1", "conv", "conv_in"),  # conv_in: diffusers' dict form cannot be used
])
def test_locon_convs_outside_the_transformer_blocks_follow_strength(tiny_model_dir, tmp_path,
                                                                    targets):
    from lora_studio.core.generate.adapters import set_adapter_weights
    from lora_studio.core.lora.apply import load_lora_into_pipeline
    from tiny_pipeline import tiny_pipe

    locon = make_lora_file(tiny_model_dir, tmp_path / "locon.safetensors", seed=4,
                           targets=targets)
    plain = make_lora_file(tiny_model_dir, tmp_path / "plain.safetensors", seed=6)
    pipe = tiny_pipe(tiny_model_dir)
    load_lora_into_pipeline(pipe, locon, "locon")
    load_lora_into_pipeline(pipe, plain, "plain")
    set_adapter_weights(pipe, [("locon", 0.5, DISTINCT), ("plain", 0.7, None)])
    scales = relative_scales(pipe.unet, "locon")
    want = {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": 0.5 * DISTINCT["IN01"],
        "down_blocks.0.resnets.0.conv1": 0.5 * DISTINCT["IN01"],
        "down_blocks.0.downsamplers.0.conv": 0.5,  # IN03: not in the 17 numbers
        "up_blocks.0.resnets.1.conv1": 0.5,  # OUT01: a level without attention
        "mid_block.resnets.1.conv1": 0.5 * DISTINCT["MID"],
        "up_blocks.1.resnets.1.conv1": 0.5 * DISTINCT["OUT10"],
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_q": 0.5 * DISTINCT["OUT10"],
    }
    if "conv_in" in targets:
        want["conv_in"] = 0.5
    for name, value in want.items():
        assert scales[name] == pytest.approx(value), name
    assert {round(v, 6) for v in relative_scales(pipe.unet, "plain").values()} == {0.7}
