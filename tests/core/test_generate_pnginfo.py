"""A1111 PNG info: the `parameters` text we write, and reading A1111's own."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from lora_studio.core.generate.pnginfo import (
    format_parameters,
    model_hash,
    parse_parameters,
    parse_prompt_loras,
    read_png_parameters,
    save_png_with_parameters,
)

# What A1111 1.10 writes for a txt2img with two LoRAs, hires fix and ADetailer (typed by hand
# from its format): a multi-line prompt and negative, a te:unet LoRA tag, quoted values,
# extension keys we do not know.
A1111_TEXT = (
    "masterpiece, best quality, 1girl, <lora:add_detail:0.6>,\n"
    "sunset over the sea, (film grain:1.2) <lora:film_grain:0.3:0.8>\n"
    "Negative prompt: (worst quality:1.4), lowres,\n"
    "bad hands\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, "
    'ADetailer model: face_yolov8n.pt, ADetailer prompt: "detailed face, smile", '
    "Hires upscale: 2, Hires upscaler: R-ESRGAN 4x+, "
    'Lora hashes: "add_detail: 7c6bad76eb54, film_grain: 0123456789ab", '
    'TI hashes: "EasyNegative: c74b4e810b03", Version: v1.10.1'
)


def test_parses_a_real_a1111_string():
    p = parse_parameters(A1111_TEXT)
    assert p["prompt"] == (
        "masterpiece, best quality, 1girl, <lora:add_detail:0.6>,\n"
        "sunset over the sea, (film grain:1.2) <lora:film_grain:0.3:0.8>")
    assert p["negative_prompt"] == "(worst quality:1.4), lowres,\nbad hands"
    assert (p["steps"], p["sampler"], p["schedule_type"]) == (28, "DPM++ 2M", "Karras")
    assert (p["cfg"], p["seed"], p["width"], p["height"]) == (6.5, 3141592653, 512, 768)
    assert (p["model"], p["model_hash"]) == ("v1-5-pruned-emaonly", "6ce0161689")
    assert p["version"] == "v1.10.1"
    assert p["loras"] == [
        {"name": "add_detail", "weight": 0.6, "te_weight": None, "lbw": None,
         "hash": "7c6bad76eb54"},
        {"name": "film_grain", "weight": 0.8, "te_weight": 0.3, "lbw": None,
         "hash": "0123456789ab"},
    ]
    extra = p["extra"]
    assert extra["Clip skip"] == "2"
    assert extra["ADetailer prompt"] == "detailed face, smile"  # unquoted
    assert extra["TI hashes"] == "EasyNegative: c74b4e810b03"
    assert extra["Hires upscaler"] == "R-ESRGAN 4x+"


def test_parses_old_a1111_strings_without_negative_or_schedule_type():
    p = parse_parameters("a castle\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, "
                         "Seed: 5, Size: 512x512, Model hash: abcdef0123, Model: anything-v3")
    assert (p["prompt"], p["negative_prompt"]) == ("a castle", "")
    assert (p["sampler"], p["schedule_type"], p["seed"]) == ("DPM++ 2M Karras", None, 5)
    assert p["loras"] == []


def test_format_matches_the_a1111_layout():
    text = format_parameters(
        "a cat in a hat", "blurry", 20, "DPM++ 2M", "Karras", 7.0, 1234, 512, 768,
        "v1-5-pruned", "6ce0161689", [("style", 0.8, "3a5b6c7d8e9f"), ("ink", 1.0, "00112233aabb")],
        "lora-studio 0.1.0")
    assert text.split("\n") == [
        "a cat in a hat, <lora:style:0.8>, <lora:ink:1>",
        "Negative prompt: blurry",
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned, "
        'Lora hashes: "style: 3a5b6c7d8e9f, ink: 00112233aabb", Version: lora-studio 0.1.0',
    ]


def test_format_leaves_out_empty_negative_automatic_schedule_and_present_tags():
    text = format_parameters("<lora:style:0.5> a cat", "", 4, "Euler a", "Automatic", 6.5, 9,
                             64, 64, "tiny-sd", None, [("style", 0.5, "aaaaaaaaaaaa")], None)
    lines = text.split("\n")
    assert lines[0] == "<lora:style:0.5> a cat"  # not appended twice
    assert len(lines) == 2 and "Negative prompt" not in text
    assert "Schedule type" not in text and "Model hash" not in text
    assert "CFG scale: 6.5" in lines[1]


def test_round_trip_with_multiline_prompt_and_quoted_values():
    prompt = "a cat,\nin a hat: red"
    text = format_parameters(prompt, "ugly,\nblurry", 30, "DPM++ 2M SDE", "Exponential", 5.5,
                             4294967295, 640, 384, "my model, v2: final", "0a1b2c3d4e",
                             [("style", 0.75, "3a5b6c7d8e9f")], "lora-studio 0.1.0")
    assert '"my model, v2: final"' in text  # values with , : are JSON-quoted
    p = parse_parameters(text)
    assert p["prompt"] == prompt + ", <lora:style:0.75>"
    assert p["negative_prompt"] == "ugly,\nblurry"
    assert (p["steps"], p["sampler"], p["schedule_type"], p["cfg"]) == (
        30, "DPM++ 2M SDE", "Exponential", 5.5)
    assert (p["seed"], p["width"], p["height"]) == (4294967295, 640, 384)
    assert (p["model"], p["model_hash"]) == ("my model, v2: final", "0a1b2c3d4e")
    assert p["loras"] == [{"name": "style", "weight": 0.75, "te_weight": None, "lbw": None,
                           "hash": "3a5b6c7d8e9f"}]
    assert p["version"] == "lora-studio 0.1.0" and p["extra"] == {}


@pytest.mark.parametrize("prompt, clean, tags", [
    ("a cat, <lora:style:0.8>", "a cat", [("style", 0.8)]),
    ("<lora:a:1>, a cat, <lora:b:-0.5>, hat", "a cat, hat", [("a", 1.0), ("b", -0.5)]),
    ("a cat <lora:my.style v2:0.3>", "a cat", [("my.style v2", 0.3)]),
    ("a cat <lora:plain>", "a cat", [("plain", 1.0)]),
    ("a dog, <lora:x:0.2:0.9>", "a dog", [("x", 0.9)]),  # te:unet → the UNet weight
    ("a dog, <lora:x:unet=0.4:te=1>", "a dog", [("x", 0.4)]),
    ("line one,\n<lora:x:1> line two", "line one,\nline two", [("x", 1.0)]),
    ("no tags (at all:1.2)", "no tags (at all:1.2)", []),
])
def test_parse_prompt_loras(prompt, clean, tags):
    got_clean, got = parse_prompt_loras(prompt)
    assert got_clean == clean
    assert [tuple(t) for t in got] == tags


def test_prompt_lora_notes_the_text_encoder_weight():
    _, (tag,) = parse_prompt_loras("<lora:x:0.2:0.9>")
    assert (tag.name, tag.weight, tag.te_weight) == ("x", 0.9, 0.2)
    _, (plain,) = parse_prompt_loras("<lora:x:0.7>")
    assert plain.te_weight is None


def test_png_keeps_parameters_for_pillow_and_a1111(tmp_path):
    text = format_parameters("ein Kätzchen, 猫", "", 20, "Euler a", None, 7, 1, 64, 64, "m", None,
                             [], None)
    path = save_png_with_parameters(Image.new("RGB", (8, 8), "red"), tmp_path / "a.png", text)
    with Image.open(path) as image:
        assert image.text["parameters"] == text
        assert image.getpixel((0, 0)) == (255, 0, 0)
    assert read_png_parameters(path) == text
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left behind


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_a1111_jpeg_and_webp_parameters_are_read_from_exif(tmp_path, suffix):
    """A1111 writes the text to the EXIF UserComment as piexif does: b"UNICODE\\0" + UTF-16-BE."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + A1111_TEXT.encode("utf_16_be")
    path = tmp_path / f"a1111{suffix}"
    Image.new("RGB", (8, 8)).save(path, exif=exif)
    text = read_png_parameters(path)
    assert text == A1111_TEXT
    assert parse_parameters(text)["seed"] == 3141592653


def test_png_without_parameters_reads_none(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert read_png_parameters(tmp_path / "plain.png") is None


def test_model_hash_is_a1111s_for_a_file_and_the_unet_for_a_folder(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights" * 1000)
    assert model_hash(ckpt) == hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10]
    unet = tmp_path / "folder" / "unet" / "diffusion_pytorch_model.safetensors"
    unet.parent.mkdir(parents=True)
    unet.write_bytes(b"unet weights")
    assert model_hash(tmp_path / "folder") == hashlib.sha256(b"unet weights").hexdigest()[:10]
    assert model_hash(tmp_path / "missing") is None


@pytest.mark.parametrize("prompt, weight, te, lbw", [
    ("<lora:x:0.8:lbw=OUTALL>", 0.8, None, "OUTALL"),
    ("<lora:x:1:1:lbw=1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1>", 1.0, 1.0,
     "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"),
    ("<lora:x:0.5:OUTS>", 0.5, None, "OUTS"),  # LBW's older positional form
    ("<lora:x:0.5:lbw=junk>", 0.5, None, "junk"),  # kept as written: the session says why
    ("<lora:x:0.5:dyn=4>", 0.5, None, None),
])
def test_prompt_lora_keeps_block_weights(prompt, weight, te, lbw):
    clean, (tag,) = parse_prompt_loras(f"a cat, {prompt}, hat")
    assert clean == "a cat, hat"
    assert (tag.name, tag.weight, tag.te_weight, tag.lbw) == ("x", weight, te, lbw)


def test_format_writes_block_weights_into_the_tag_and_reads_them_back():
    text = format_parameters("a cat", "", 4, "Euler a", None, 7, 1, 64, 64, "m", None,
                             [("style", 0.8, "aaaaaaaaaaaa", "OUTALL"), ("ink", 1.0, None, None)])
    assert text.split("\n")[0] == "a cat, <lora:style:0.8:lbw=OUTALL>, <lora:ink:1>"
    assert [(lo["name"], lo["lbw"]) for lo in parse_parameters(text)["loras"]] == [
        ("style", "OUTALL"), ("ink", None)]
