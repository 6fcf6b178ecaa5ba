"""LoRA Block Weight notation: parsing, formatting, presets, errors, and where each number lands
in a UNet (SD 1.5's layout, and the smaller / other layouts it is mapped onto)."""

from __future__ import annotations

import pytest

from lora_studio.core.errors import StudioError
from lora_studio.core.lora.block_weights import (
    BLOCK_IDS,
    LBW_PRESETS,
    PRESETS,
    SD15_LAYOUT,
    BlockWeights,
    UNetLayout,
    normalized,
)

# Distinct numbers, so a block landing in the wrong place shows.
DISTINCT = tuple(range(1, 18))  # BASE=1, IN01=2, IN02=3, ..., MID=8, OUT03=9, ..., OUT11=17
TINY = UNetLayout(levels=2, layers_per_block=1, down_attention=(0,), up_attention=(1,))
TINY_SHAPES = UNetLayout(levels=3, layers_per_block=1, down_attention=(1, 2), up_attention=(0, 1))
SDXL = UNetLayout(levels=3, layers_per_block=2, down_attention=(1, 2), up_attention=(0, 1))


def test_the_17_blocks_are_lbws_sd1_blocks():
    assert BLOCK_IDS == ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
                         "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10",
                         "OUT11")


# ------------------------------------------------------------------ parsing and formatting
@pytest.mark.parametrize("text", ["OUTALL", "outall", "lbw=OUTALL", " LBW=OutAll ",
                                  "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
                                  "1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1"])
def test_a_preset_and_its_numbers_read_the_same(text):
    weights = BlockWeights.parse(text)
    assert weights.values == LBW_PRESETS["OUTALL"]
    assert weights.preset == "OUTALL" and weights.notation() == "OUTALL"
    assert weights["BASE"] == 1 and weights["IN01"] == 0 and weights["OUT11"] == 1


def test_numbers_round_trip_through_the_notation():
    weights = BlockWeights((1, 0.25, -0.5, 0, 1.5, 2, 0.125, 0.8, 1, 1, 0, 0, 0.3, 1, 1, 1, 1))
    assert weights.notation() == "1,0.25,-0.5,0,1.5,2,0.125,0.8,1,1,0,0,0.3,1,1,1,1"
    assert weights.preset is None
    assert BlockWeights.parse(weights.notation()) == weights
    assert BlockWeights.parse(f"lbw={weights.numbers()}") == weights
    for name in PRESETS:
        preset = BlockWeights.preset_named(name)
        assert BlockWeights.parse(preset.notation()) == preset == BlockWeights.parse(name)


def test_our_own_presets_are_written_as_numbers_a1111_can_read():
    no_te = BlockWeights.parse("NO_TE")
    assert no_te.preset == "NO_TE" and no_te.text_encoder == 0
    assert no_te.notation() == "0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"  # A1111 has no NO_TE
    style = BlockWeights.parse("style")
    assert style.notation() == "0,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"
    assert set(LBW_PRESETS) == {"NONE", "ALL", "INS", "IND", "INALL", "MIDD", "OUTD", "OUTS",
                                "OUTALL", "ALL0.5"}


def test_all_ones_is_the_same_as_no_block_weights():
    assert BlockWeights.ones().is_identity and normalized(BlockWeights.ones()) is None
    assert normalized(None) is None
    outs = BlockWeights.parse("OUTS")
    assert normalized(outs) is outs
    assert outs.replaced("IN01", 0.5)["IN01"] == 0.5 and outs["IN01"] == 0  # a copy


@pytest.mark.parametrize("text, what", [
    ("1,0,1,0,1", "need 17 numbers (BASE, IN01 … OUT11); got 5"),
    ("1,1,1,1,1,1,1,1,1,1,1,1", "12 numbers is LBW's SDXL form, which is not read yet"),
    (",".join(["1"] * 26), "26 numbers is LBW's LyCORIS form"),
    ("1,R,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1", "'R' is not a number"),
    ("CHARA", "Unknown LoRA block weight preset 'CHARA'"),
    ("", "No LoRA block weights given"),
    ("lbw=", "No LoRA block weights given"),
    ("1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,inf", "'inf' is not a number"),
])
def test_bad_notation_says_what_is_wrong_and_what_to_write(text, what):
    with pytest.raises(StudioError) as caught:
        BlockWeights.parse(text)
    assert what in caught.value.what
    assert "17 numbers BASE, IN01" in caught.value.fix and "OUTALL" in caught.value.fix


def test_a_value_needs_17_finite_numbers():
    with pytest.raises(StudioError, match="got 3"):
        BlockWeights((1, 2, 3))
    with pytest.raises(StudioError, match="finite"):
        BlockWeights((float("nan"),) * 17)


# ------------------------------------------------------------------ where the numbers land
def test_sd15_dict_form_is_diffusers_set_adapters_dict_scaled_by_strength():
    weights = BlockWeights(DISTINCT)
    assert weights.to_diffusers(0.5) == {
        "text_encoder": 0.5,
        "unet": {
            "down": {"block_0": [1.0, 1.5], "block_1": [2.0, 2.5], "block_2": [3.0, 3.5]},
            "mid": 4.0,
            "up": {"block_1": [4.5, 5.0, 5.5], "block_2": [6.0, 6.5, 7.0],
                   "block_3": [7.5, 8.0, 8.5]},
        },
    }
    assert weights.to_diffusers(1.0, text_encoders=())["unet"]["mid"] == 8
    assert "text_encoder" not in weights.to_diffusers(1.0, text_encoders=())


@pytest.mark.parametrize("module, block", [
    ("down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q", "IN02"),
    ("down_blocks.1.resnets.0.conv1", "IN04"),  # a LoCon conv: input_blocks.4 = resnet + attn
    ("down_blocks.2.attentions.1.proj_out", "IN08"),
    ("mid_block.resnets.1.conv2", "MID"),
    ("up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", "OUT03"),
    ("up_blocks.2.resnets.2.conv1", "OUT08"),
    ("up_blocks.2.upsamplers.0.conv", "OUT08"),  # in output_blocks.8 with the last layer
    ("up_blocks.3.attentions.2.proj_in", "OUT11"),
])
def test_sd15_modules_take_their_blocks_number(module, block):
    weights = BlockWeights(DISTINCT)
    assert weights.module_factor(module, SD15_LAYOUT) == weights[block]


@pytest.mark.parametrize("module", [
    "down_blocks.0.downsamplers.0.conv",  # IN03
    "down_blocks.3.resnets.1.conv1",  # IN11
    "up_blocks.0.resnets.2.conv2",  # OUT02
    "up_blocks.0.upsamplers.0.conv",
    "conv_in", "conv_out", "time_embedding.linear_1",
])
def test_blocks_the_17_numbers_leave_out_keep_the_plain_strength(module):
    assert BlockWeights(DISTINCT).module_factor(module, SD15_LAYOUT) == 1.0


@pytest.mark.parametrize("layout, down, up", [
    # the tiny test model: 2 levels of 1 layer, attention in down 0 and up 1
    (TINY, {"block_0": ["IN01"]}, {"block_1": ["OUT09", "OUT10"]}),
    # Tiny Shapes: 3 levels of 1 layer, attention in down 1-2 and up 0-1
    (TINY_SHAPES, {"block_1": ["IN04"], "block_2": ["IN07"]},
     {"block_0": ["OUT03", "OUT04"], "block_1": ["OUT06", "OUT07"]}),
    # SDXL: 3 levels of 2 layers
    (SDXL, {"block_1": ["IN04", "IN05"], "block_2": ["IN07", "IN08"]},
     {"block_0": ["OUT03", "OUT04", "OUT05"], "block_1": ["OUT06", "OUT07", "OUT08"]}),
])
def test_other_unets_get_the_numbers_of_the_same_depth(layout, down, up):
    weights = BlockWeights(DISTINCT)
    unet = weights.to_diffusers(1.0, layout)["unet"]
    assert unet["down"] == {k: [weights[b] for b in v] for k, v in down.items()}
    assert unet["up"] == {k: [weights[b] for b in v] for k, v in up.items()}
    assert unet["mid"] == weights["MID"]
    named = {b for v in (*down.values(), *up.values()) for b in v}
    assert layout.used_ids() == named | {"BASE", "MID"}


def test_a_deeper_level_and_more_layers_repeat_the_last_numbers():
    deep = UNetLayout(levels=5, layers_per_block=3, down_attention=(0, 3), up_attention=(1,))
    weights = BlockWeights(DISTINCT)
    unet = weights.to_diffusers(1.0, deep)["unet"]
    assert unet["down"]["block_0"] == [weights["IN01"], weights["IN02"], weights["IN02"]]
    assert unet["down"]["block_3"] == [weights["IN07"], weights["IN08"], weights["IN08"]]
    assert unet["up"]["block_1"] == [weights[b] for b in ("OUT03", "OUT04", "OUT05", "OUT05")]


def test_diffusers_accepts_the_sd15_dict_and_reads_the_layout():
    """On a UNet with SD 1.5's block structure (narrow channels, so it is small)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.unet_loader_utils import _maybe_expand_lora_scales

    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 32, 32, 32),
                                layers_per_block=2, cross_attention_dim=32, norm_num_groups=32,
                                attention_head_dim=2)
    assert UNetLayout.of(unet) == SD15_LAYOUT
    weights = BlockWeights(DISTINCT)
    (expanded,) = _maybe_expand_lora_scales(unet, [weights.to_diffusers(1.0)["unet"]])
    assert expanded["down_blocks.0.attentions.1"] == weights["IN02"]
    assert expanded["mid_block.attentions.0"] == weights["MID"]
    assert expanded["up_blocks.1.attentions.0"] == weights["OUT03"]
    assert expanded["up_blocks.3.attentions.2"] == weights["OUT11"]
    assert len(expanded) == 16  # every number but BASE lands on one transformer block
