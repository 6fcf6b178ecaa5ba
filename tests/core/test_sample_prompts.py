"""kohya's inline sample-prompt options (--n --w --h --d --l --s --ss) and the previews they make."""

from __future__ import annotations

import numpy as np
import pytest

from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError
from lora_studio.core.train.config import SampleSection
from lora_studio.core.train.sample_prompts import SamplePrompt, parse_sample_prompt

SECTION = SampleSection(negative_prompt="lowres", seed=1234, steps=20, cfg=7.0,
                        sampler="Euler a")


def parse(line: str) -> SamplePrompt:
    return parse_sample_prompt(line, SECTION, resolution=512)


def test_a_line_without_options_takes_the_sample_section_and_resolution():
    assert parse("  a cat in a hat  ") == SamplePrompt(
        prompt="a cat in a hat", negative="lowres", width=512, height=512, seed=1234, cfg=7.0,
        steps=20, sampler="Euler a")


@pytest.mark.parametrize(("option", "field", "value"), [
    ("--n blurry, bad hands", "negative", "blurry, bad hands"),
    ("--w 768", "width", 768),
    ("--h 640", "height", 640),
    ("--d 42", "seed", 42),
    ("--l 5.5", "cfg", 5.5),
    ("--l 4", "cfg", 4.0),
    ("--s 28", "steps", 28),
    ("--ss euler", "sampler", "Euler"),
    ("--ss k_dpm_2_a", "sampler", "DPM2 a"),
    ("--ss dpmsolver++", "sampler", "DPM++ 2M"),
    ("--ss DPM++ 2M Karras", "sampler", "DPM++ 2M Karras"),  # an A1111 name works too
])
def test_each_option_sets_its_value_and_leaves_the_others(option, field, value):
    parsed = parse(f"a cat {option}")
    assert parsed.prompt == "a cat"
    assert getattr(parsed, field) == value
    expected = parse("a cat").__dict__ | {field: value}
    assert parsed.__dict__ == expected


def test_options_combine_in_any_order_case_insensitively_and_the_last_copy_wins():
    parsed = parse("1girl, solo --W 768 --n lowres, blurry --D 7 --h 512 --s 30 --l 6.5 "
                   "--ss euler_a --d 8")
    assert parsed == SamplePrompt(prompt="1girl, solo", negative="lowres, blurry", width=768,
                                  height=512, seed=8, cfg=6.5, steps=30, sampler="Euler a")


def test_width_and_height_are_rounded_down_to_a_multiple_of_8_as_kohya_does():
    # kohya: `width = max(64, width - width % 8)`; the 64 floor is left out on purpose.
    parsed = parse("a cat --w 517 --h 63")
    assert (parsed.width, parsed.height) == (512, 56)


def test_dashes_inside_the_text_are_text_as_in_kohya():
    # kohya splits on " --" only: "--" without a space before it stays in the prompt.
    assert parse("a cat--dog, x--y --w 64").prompt == "a cat--dog, x--y"
    assert parse("a cat--dog").width == 512
    # A negative prompt runs up to the next " --", whatever it holds.
    assert parse("a cat --n no--dogs, blurry --s 5").negative == "no--dogs, blurry"


@pytest.mark.parametrize(("line", "named"), [
    ("a cat --x 3", "unknown option --x"),
    ("a cat --width 512", "unknown option --width"),
    ("a cat --w wide", "--w 'wide' is not a whole number"),
    ("a cat --w 512px", "--w '512px' is not a whole number"),
    ("a cat --d -5", "--d '-5' is not a whole number"),
    ("a cat --l high", "--l 'high' is not a CFG scale"),
    ("a cat --l nan", "--l 'nan' is not a CFG scale"),
    ("a cat --s 0", "--s 0 is outside 1-1000"),
    ("a cat --s 1001", "--s 1001 is outside 1-1000"),
    ("a cat --w 4", "--w 4 is below 8 pixels"),
    ("a cat --ss warp_drive", "--ss 'warp_drive' is not a sampler"),
    ("a cat --n", "--n has no value"),
    ("a cat --g 3.5", "--g (FLUX's embedded guidance scale) is not supported"),
    ("a cat -- and a dog", '" -- and a dog" is not an option'),
])
def test_bad_options_are_errors_that_name_the_option_and_the_prompt(line, named):
    with pytest.raises(ConfigError) as caught:
        parse(line)
    assert caught.value.key == "sample.prompts"
    assert named in caught.value.what
    assert repr(line) in caught.value.what  # the prompt it is in
    assert caught.value.fix


def test_parameters_carry_the_parsed_values_as_a1111_png_info():
    from lora_studio.core.generate.pnginfo import parse_parameters

    info = parse_parameters(parse("a cat --n dog --w 64 --h 32 --d 7 --s 3 --l 4.5 "
                                  "--ss dpmsolver++").parameters())
    assert (info["prompt"], info["negative_prompt"], info["width"], info["height"],
            info["seed"], info["steps"], info["cfg"], info["sampler"]) == (
        "a cat", "dog", 64, 32, 7, 3, 4.5, "DPM++ 2M")


# ------------------------------------------------------------------ previews on the tiny model
def _previews(tiny_model_dir, dataset, out, prompts, seed):
    from test_train_loop import make_config, run

    cfg = make_config(tiny_model_dir, dataset, out, train={"steps": 1},
                      sample={"every": 1, "prompts": prompts, "steps": 2, "seed": seed})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    first = [p for p in rec.of(ev.Preview) if p.step == 1][:len(prompts)]
    assert [p.index for p in first] == list(range(len(prompts)))
    return first


def test_a_preview_renders_with_its_own_size_and_seed(tiny_model_dir, tmp_path,
                                                      one_torch_thread):
    from test_train_loop import make_dataset

    from lora_studio.core.generate.pnginfo import parse_parameters, read_png_parameters

    dataset = make_dataset(tmp_path / "stars")
    own, plain = _previews(tiny_model_dir, dataset, tmp_path / "a",
                           ["zqstar --w 64 --h 32 --d 7", "zqstar --w 64 --h 32"], seed=1234)
    assert own.image.size == (64, 32) and plain.image.size == (64, 32)
    assert own.prompt == "zqstar"
    info = parse_parameters(own.image.info["parameters"])
    assert (info["seed"], info["width"], info["height"], info["steps"]) == (7, 64, 32, 2)
    written = tmp_path / "a" / "samples" / "step-000001-0.png"
    assert parse_parameters(read_png_parameters(written))["seed"] == 7

    (same_seed,) = _previews(tiny_model_dir, dataset, tmp_path / "b",
                             ["zqstar --w 64 --h 32"], seed=7)
    shown, reference = (np.asarray(p.image, dtype=int) for p in (own, same_seed))
    assert np.array_equal(shown, reference)  # --d 7 renders what sample.seed = 7 renders
    assert np.abs(np.asarray(plain.image, dtype=int) - shown).max() > 10  # seed 1234 differs


def test_a_bad_option_fails_when_the_config_is_read_not_at_the_first_preview(tmp_path):
    import pytest

    from lora_studio.core.errors import ConfigError
    from lora_studio.core.train.config import config_from_dict

    with pytest.raises(ConfigError, match="sample.prompts"):
        config_from_dict({"dataset": {"path": "a"}, "output": {"path": str(tmp_path)},
                          "sample": {"every": 10, "prompts": ["a cat --w wide"]}})
