"""kohya's caption options (shuffle, keep_tokens, dropout) and captions longer than 75 tokens."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from lora_studio.core.dataset.captions import (
    CaptionOptions,
    caption_token_ids,
    caption_tokenizer,
    caption_window,
    encode_captions,
    process_caption,
)

TEN_TAGS = [f"tag{i}" for i in range(10)]

# A realistic booru caption of 123 CLIP tokens: its 76th token is the tag "field".
LONG_CAPTION = (
    "1girl, solo, long hair, looking at viewer, smile, open mouth, blue eyes, blonde hair, "
    "shirt, long sleeves, hat, dress, bow, holding, jewelry, closed mouth, standing, full body, "
    "flower, outdoors, sky, day, cloud, hair bow, white dress, tree, blue sky, grass, "
    "sun hat, straw hat, field, flower field, sunflower, summer, wind lift, hat ribbon, "
    "hand on headwear, sundress, white footwear, sandals, petals, cumulonimbus cloud, "
    "depth of field, masterpiece, best quality, absurdres")
MORE_TAGS = (", lens flare, light particles, from side, from below, arm up, head tilt, "
             "parted lips, blush, collarbone, bare shoulders, sleeveless dress, wavy hair, "
             "floating hair, hair between eyes, sidelocks, eyelashes, light smile")


def run(caption: str, seed: int, **options) -> str:
    return process_caption(caption, CaptionOptions(**options), random.Random(seed))


def text_ids(tokenizer, caption: str) -> list[int]:
    return tokenizer(caption, add_special_tokens=False, verbose=False).input_ids


# --- process_caption -------------------------------------------------------------------------

def test_shuffle_is_deterministic_per_rng_seed():
    caption = ", ".join(TEN_TAGS)
    first = run(caption, 7, shuffle_caption=True)
    assert first == run(caption, 7, shuffle_caption=True)
    assert first != run(caption, 8, shuffle_caption=True)
    assert first != caption
    assert sorted(first.split(", ")) == sorted(TEN_TAGS)


def test_keep_tokens_keeps_the_first_tags_in_place():
    caption = ", ".join(TEN_TAGS)
    outputs = [run(caption, seed, shuffle_caption=True, keep_tokens=3).split(", ")
               for seed in range(20)]
    assert all(out[:3] == TEN_TAGS[:3] for out in outputs)
    assert all(sorted(out[3:]) == sorted(TEN_TAGS[3:]) for out in outputs)
    assert len({tuple(out) for out in outputs}) > 10  # the rest really moves


def test_keep_tokens_separator_fixes_a_head_and_an_optional_tail():
    caption = "1girl, frieren ||| a, b, c, d, e, f ||| masterpiece, best quality"
    outputs = [run(caption, seed, shuffle_caption=True, keep_tokens=5,
                   keep_tokens_separator="|||").split(", ") for seed in range(20)]
    for out in outputs:
        assert out[:2] == ["1girl", "frieren"]  # the separator wins over keep_tokens
        assert out[-2:] == ["masterpiece", "best quality"]
        assert sorted(out[2:-2]) == list("abcdef")
    assert len({tuple(out) for out in outputs}) > 5
    head_only = run("x, y ||| a, b, c, d", 3, shuffle_caption=True, keep_tokens_separator="|||")
    assert head_only.startswith("x, y, ") and sorted(head_only.split(", ")[2:]) == list("abcd")


def test_separator_is_removed_even_when_nothing_is_shuffled():
    """Our one deliberate difference from kohya (which would train on the literal '|||')."""
    caption = "1girl, frieren ||| a, b ||| masterpiece"
    out = run(caption, 0, keep_tokens_separator="|||")
    assert out == "1girl, frieren, a, b, masterpiece"


def test_without_shuffle_or_dropout_the_caption_is_left_alone():
    caption = "a red  star,b , "
    rng = random.Random(0)
    state = rng.getstate()
    assert process_caption(caption, CaptionOptions(keep_tokens=1), rng) == caption
    assert rng.getstate() == state  # no draws: turning an option off shifts nothing else


def test_caption_dropout_rates_zero_and_one():
    caption = "sks, 1girl, solo"
    assert all(run(caption, s, caption_dropout_rate=0.0, shuffle_caption=True)
               for s in range(200))
    assert all(run(caption, s, caption_dropout_rate=1.0, caption_prefix="pre",
                   caption_suffix="post") == "" for s in range(200))


def test_tag_dropout_rates_zero_one_and_in_between():
    caption = ", ".join(TEN_TAGS)
    assert run(caption, 1, caption_tag_dropout_rate=1.0, keep_tokens=2) == "tag0, tag1"
    assert run(caption, 1, caption_tag_dropout_rate=1.0) == ""
    assert run(caption, 1, caption_tag_dropout_rate=0.0, shuffle_caption=True).count(",") == 9
    rng = random.Random(0)
    options = CaptionOptions(caption_tag_dropout_rate=0.3, keep_tokens=2)
    draws = 2000
    kept = [process_caption(caption, options, rng).split(", ") for _ in range(draws)]
    assert all(out[:2] == ["tag0", "tag1"] for out in kept)  # fixed tags never drop
    kept_share = sum(len(out) - 2 for out in kept) / (8 * draws)
    assert kept_share == pytest.approx(0.7, abs=0.02)
    assert all(out[2:] == sorted(out[2:]) for out in kept)  # no shuffle: order kept


def test_prefix_and_suffix_are_joined_with_a_space_before_the_split():
    assert run("1girl, solo", 0, caption_prefix="sks", caption_suffix="style") == \
        "sks 1girl, solo style"
    # kohya: the prefix becomes part of the first tag, which keep_tokens then holds ...
    outs = {run("1girl, a, b, c, d", s, caption_prefix="sks", keep_tokens=1,
                shuffle_caption=True) for s in range(20)}
    assert all(out.startswith("sks 1girl, ") for out in outs) and len(outs) > 5
    # ... unless the prefix ends with a comma: then it is a tag of its own
    outs = {run("1girl, a, b, c, d", s, caption_prefix="sks,", keep_tokens=1,
                shuffle_caption=True) for s in range(20)}
    assert all(out.startswith("sks, ") for out in outs)
    assert any(not out.startswith("sks, 1girl") for out in outs)


def test_options_say_when_text_embeddings_cannot_be_cached():
    assert not CaptionOptions().varies_per_step and CaptionOptions().why_uncached() == ""
    fixed = CaptionOptions(keep_tokens=2, keep_tokens_separator="|||", caption_prefix="sks")
    assert not fixed.varies_per_step
    assert CaptionOptions(shuffle_caption=True).why_uncached() == "shuffle_caption is on"
    assert "caption_dropout_rate is 0.1" in CaptionOptions(caption_dropout_rate=0.1).why_uncached()
    tags = CaptionOptions(caption_tag_dropout_rate=0.05)
    assert tags.varies_per_step and "caption_tag_dropout_rate" in tags.why_uncached()
    with pytest.raises(ValueError, match="caption_dropout_rate"):
        CaptionOptions(caption_dropout_rate=1.5)
    with pytest.raises(ValueError, match="keep_tokens"):
        CaptionOptions(keep_tokens=-1)


# --- caption_window / caption_tokenizer ------------------------------------------------------

def test_caption_tokenizer_is_the_shipped_clip_tokenizer_and_cached():
    tokenizer = caption_tokenizer()
    assert tokenizer is caption_tokenizer()
    assert tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_module_import_stays_light():
    code = ("import sys, lora_studio.core.dataset.captions; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def first_dropped_by_prefixes(tokenizer, caption: str, limit: int) -> str:
    tags = [t.strip() for t in caption.split(",")]
    for i, tag in enumerate(tags):
        if len(text_ids(tokenizer, ", ".join(tags[:i + 1]))) > limit:
            return tag
    raise AssertionError("the caption fits")


def test_caption_window_names_the_first_tag_the_encoder_does_not_read():
    tokenizer = caption_tokenizer()
    window = caption_window(tokenizer, LONG_CAPTION)
    assert (window.tokens, window.limit, window.kept, window.cut) == (123, 75, 75, True)
    assert window.first_dropped_tag == first_dropped_by_prefixes(tokenizer, LONG_CAPTION, 75)
    assert window.first_dropped_tag == "field"
    longer = caption_window(tokenizer, LONG_CAPTION + MORE_TAGS, 150)
    assert longer.cut and longer.limit == 150
    assert longer.first_dropped_tag == first_dropped_by_prefixes(
        tokenizer, LONG_CAPTION + MORE_TAGS, 150)


@pytest.mark.parametrize("head", ["cat", "black cat"])  # the cut on a comma, then on a tag
def test_caption_window_cut_on_a_comma_names_the_next_tag(head):
    tokenizer = caption_tokenizer()
    caption = ", ".join([head] + ["dog"] * 37 + ["bird", "fish", "frog"])
    window = caption_window(tokenizer, caption)
    expected = first_dropped_by_prefixes(tokenizer, caption, 75)
    assert window.first_dropped_tag == expected == ("bird" if head == "cat" else "dog")


def test_caption_window_when_it_fits():
    tokenizer = caption_tokenizer()
    assert caption_window(tokenizer, "a red star, blue background") == \
        caption_window(tokenizer, "a red star, blue background", 75)
    window = caption_window(tokenizer, "a red star, blue background")
    assert (window.tokens, window.cut, window.kept, window.first_dropped_tag) == \
        (6, False, 6, None)  # a red star , blue background
    window = caption_window(tokenizer, LONG_CAPTION, 150)
    assert (window.tokens, window.cut, window.kept, window.first_dropped_tag) == \
        (123, False, 123, None)


@pytest.mark.parametrize("length", [0, 76, 77, 100, 300])
def test_max_token_length_is_75_150_or_225(length):
    with pytest.raises(ValueError, match="max_token_length"):
        caption_window(caption_tokenizer(), "a", length)
    with pytest.raises(ValueError, match="max_token_length"):
        caption_token_ids(caption_tokenizer(), ["a"], length)


# --- encode_captions ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd15(tiny_model_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(tiny_model_dir / "text_encoder").eval()
    return tokenizer, text_encoder


@pytest.fixture(scope="module")
def sd2():
    """SD 2.x's tokenizer (pad "!", not EOS) and a tiny text encoder for it."""
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    from lora_studio.core.models.tiny import tiny_text_config
    from lora_studio.core.paths import configs_dir

    tokenizer = CLIPTokenizer.from_pretrained(configs_dir() / "sd2" / "tokenizer",
                                              model_max_length=77)
    torch.manual_seed(3)
    return tokenizer, CLIPTextModel(tiny_text_config(tokenizer, 32, "gelu", 32)).eval()


def kohya_by_hand(text_encoder, chunks: list[list[int]]):
    """Encode each BOS + chunk + EOS on its own; keep the first BOS, the middles, the last EOS."""
    import torch

    states = [text_encoder(torch.tensor([chunk]))[0][0] for chunk in chunks]
    return torch.cat([states[0][:1]] + [s[1:76] for s in states] + [states[-1][76:]])


def test_encode_75_is_todays_encode_text(sd15):
    """Bit for bit what training did before (data.encode_text, which may now call us, and the
    pipeline's own tokenisation written out here: one 77-token window, truncated)."""
    import torch

    from lora_studio.core.train.data import encode_text

    tokenizer, text_encoder = sd15
    captions = [LONG_CAPTION, "a red star", ""]
    with torch.no_grad():
        ours = encode_captions(tokenizer, text_encoder, captions)
        today = encode_text(tokenizer, text_encoder, captions)
        ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
        by_hand = text_encoder(ids)[0]
    assert ours.shape == (3, 77, 32)
    assert torch.equal(ours, today)
    assert torch.equal(ours, by_hand)


@pytest.mark.parametrize("length", [150, 225])
def test_encode_long_is_kohyas_chunking(sd15, length):
    import torch

    tokenizer, text_encoder = sd15
    caption = LONG_CAPTION + MORE_TAGS + MORE_TAGS + ", sparkle"  # every chunk is full
    ids = text_ids(tokenizer, caption)
    assert len(ids) > 225  # and the tokenizer truncates
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    chunks = [[bos] + ids[k:k + 75] + [eos] for k in range(0, length, 75)]
    with torch.no_grad():
        ours = encode_captions(tokenizer, text_encoder, [caption], length)
        expected = kohya_by_hand(text_encoder, chunks)
    assert ours.shape == (1, length + 2, 32)
    torch.testing.assert_close(ours[0], expected, rtol=0, atol=1e-5)


def test_encode_150_reads_the_tags_after_token_75(sd15):
    import torch

    tokenizer, text_encoder = sd15
    other = LONG_CAPTION.replace("masterpiece, best quality, absurdres", "sketch, monochrome")
    a, b = text_ids(tokenizer, LONG_CAPTION), text_ids(tokenizer, other)
    first_difference = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert first_difference > 80
    with torch.no_grad():
        short = encode_captions(tokenizer, text_encoder, [LONG_CAPTION, other], 75)
        long = encode_captions(tokenizer, text_encoder, [LONG_CAPTION, other], 150)
    assert torch.equal(short[0], short[1])  # 75: the tags after token 75 never reach the model
    assert long.shape == (2, 152, 32)
    assert not torch.allclose(long[0], long[1])  # 150: they do
    assert torch.allclose(long[:, :76], short[:, :76], rtol=0, atol=1e-5)  # the first window
    assert torch.allclose(long[0, :1 + first_difference], long[1, :1 + first_difference],
                          rtol=0, atol=1e-5)


def test_short_caption_150_pads_like_kohya_v1(sd15):
    """SD 1.x (pad = EOS): a short caption's second chunk is BOS and EOS only."""
    import torch

    tokenizer, text_encoder = sd15
    ids = text_ids(tokenizer, "a red star")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    first = [bos] + ids + [eos] * (76 - len(ids))
    chunks = caption_token_ids(tokenizer, ["a red star"], 150)
    assert chunks.tolist() == [[first, [bos] + [eos] * 76]]
    with torch.no_grad():
        ours = encode_captions(tokenizer, text_encoder, ["a red star"], 150)
        expected = kohya_by_hand(text_encoder, [first, [bos] + [eos] * 76])
    torch.testing.assert_close(ours[0], expected, rtol=0, atol=1e-5)


def test_sd2_tokenizer_gets_kohyas_eos_fixups(sd2):
    """pad != EOS: a chunk of text to its end ends with EOS; an empty chunk is BOS EOS PAD..."""
    import torch

    tokenizer, text_encoder = sd2
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    assert pad != eos
    long_ids = text_ids(tokenizer, LONG_CAPTION)  # 123 tokens
    short_ids = text_ids(tokenizer, "a red star")
    expected = [
        [[bos] + long_ids[:75] + [eos],  # the 77th id was PAD: made EOS
         [bos] + long_ids[75:] + [eos] + [pad] * (76 - len(long_ids[75:]) - 1)],
        [[bos] + short_ids + [eos] + [pad] * (75 - len(short_ids)),
         [bos, eos] + [pad] * 75],  # empty chunk: EOS after BOS
    ]
    captions = [LONG_CAPTION, "a red star"]
    assert caption_token_ids(tokenizer, captions, 150).tolist() == expected
    with torch.no_grad():
        ours = encode_captions(tokenizer, text_encoder, captions, 150)
        for row, chunks in enumerate(expected):
            torch.testing.assert_close(ours[row], kohya_by_hand(text_encoder, chunks),
                                       rtol=0, atol=1e-5)
