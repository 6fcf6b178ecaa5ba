"""Dataset check: which images are usable, which files are skipped and why, captions."""

from __future__ import annotations

import json
import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.core.dataset import (
    IMAGE_EXTENSIONS,
    DatasetReport,
    check_dataset,
    format_report,
    tag_frequency,
)
from lora_studio.core.errors import DatasetError


# ---------------------------------------------------------------- fixture builders
def save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def rgb(size=(80, 80), color=(200, 100, 50)) -> Image.Image:
    return Image.new("RGB", size, color)


def palette_with_transparency() -> Image.Image:
    img = Image.new("P", (80, 80), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    img.putpixel((0, 0), 0)
    return img


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose IHDR claims `width` x `height` (the CRC fixed up)."""
    save(Image.new("L", (1, 1)), path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def cut_in_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def noisy(size=(96, 96), seed=0) -> Image.Image:
    """Random pixels: compresses badly, so half the file really is missing pixel data."""
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def reasons(report: DatasetReport) -> dict[str, str]:
    return {s.path.name: s.reason for s in report.skipped}


# ---------------------------------------------------------------- formats and modes
def test_every_supported_format_and_mode_is_usable(tmp_path):
    save(rgb(), tmp_path / "plain.png")
    save(rgb(), tmp_path / "UPPER.JPG", quality=90)
    save(rgb(), tmp_path / "photo.jpeg")
    save(rgb(), tmp_path / "web.webp")
    save(rgb(), tmp_path / "bitmap.bmp")
    save(Image.new("RGBA", (80, 80), (255, 0, 0, 0)), tmp_path / "alpha.png")
    save(Image.new("LA", (80, 80), (100, 128)), tmp_path / "gray_alpha.png")
    save(palette_with_transparency(), tmp_path / "palette.png", transparency=0)
    save(Image.new("L", (80, 80), 90), tmp_path / "gray.png")
    save(Image.new("I;16", (80, 80), 40000), tmp_path / "gray16.png")
    save(Image.new("CMYK", (80, 80), (0, 255, 255, 0)), tmp_path / "print.jpg")
    save(Image.new("RGB", (80, 80)), tmp_path / "shouty.PNG")

    report = check_dataset(tmp_path)

    assert report.skipped == []
    assert report.usable == 12
    assert {item.image_path.name for item in report.items} == {
        p.name for p in tmp_path.iterdir()}
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp"} <= IMAGE_EXTENSIONS


# ---------------------------------------------------------------- bad files
def test_each_bad_file_is_skipped_with_its_reason_and_the_good_one_survives(tmp_path):
    save(rgb(), tmp_path / "good.png")
    (tmp_path / "good.txt").write_text("sks dog", encoding="utf-8")
    (tmp_path / "zero.png").write_bytes(b"")
    cut_in_half(save(noisy(), tmp_path / "half.png"))
    cut_in_half(save(noisy(), tmp_path / "half.jpg", quality=95))
    (tmp_path / "words.jpg").write_text("this is a text file, renamed", encoding="utf-8")
    (tmp_path / "noise.webp").write_bytes(bytes(range(256)) * 8)
    save(rgb((32, 200)), tmp_path / "narrow.png")
    bomb_png(tmp_path / "bomb.png", 20000, 20000)  # over twice Pillow's limit: an error there
    bomb_png(tmp_path / "big.png", 10000, 10000)  # over the limit: only a warning in Pillow
    save(rgb(), tmp_path / "anim.gif")
    (tmp_path / "notes.md").write_text("shoot list", encoding="utf-8")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "._good.png").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble clutter

    report = check_dataset(tmp_path, min_size=64)

    assert [item.image_path.name for item in report.items] == ["good.png"]
    assert report.items[0].caption == "sks dog"
    why = reasons(report)
    assert set(why) == {"zero.png", "half.png", "half.jpg", "words.jpg", "noise.webp",
                        "narrow.png", "bomb.png", "big.png", "anim.gif"}
    assert why["zero.png"].startswith("empty file")
    assert why["half.png"].startswith("truncated or corrupt")
    assert why["half.jpg"].startswith("truncated or corrupt")
    assert why["words.jpg"].startswith("not an image")
    assert why["noise.webp"].startswith("not an image")
    assert why["narrow.png"].startswith("too small: 32x200")
    # Both bombs are recognised from their header alone (their pixel data is 1x1, so decoding
    # them would have reported "truncated" instead).
    assert why["bomb.png"].startswith("too large")
    assert why["big.png"].startswith("too large: 10000x10000")
    assert why["anim.gif"].startswith("unsupported format .gif")
    assert [p.name for p in report.ignored] == ["notes.md"]
    assert report.usable == 1


def test_min_size_applies_to_either_side(tmp_path):
    save(rgb((100, 63)), tmp_path / "short.png")
    save(rgb((64, 64)), tmp_path / "exact.png")

    report = check_dataset(tmp_path, min_size=64)

    assert [i.image_path.name for i in report.items] == ["exact.png"]
    assert reasons(report)["short.png"].startswith("too small: 100x63")


def test_missing_or_non_folder_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError) as missing:
        check_dataset(tmp_path / "nope")
    assert "does not exist" in missing.value.what and missing.value.fix
    file_root = tmp_path / "a.png"
    save(rgb(), file_root)
    with pytest.raises(DatasetError, match="not a folder"):
        check_dataset(file_root)


# ---------------------------------------------------------------- captions
def test_captions_sidecars_default_and_cleanup(tmp_path):
    save(rgb(), tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes("\ufeff  sks dog, red collar \n\n".encode("utf-8"))
    save(rgb(), tmp_path / "b.JPG")
    (tmp_path / "b.TXT").write_text("sks dog, beach", encoding="utf-8")
    save(rgb(), tmp_path / "c.png")
    (tmp_path / "c.txt").write_text("  \n", encoding="utf-8")  # empty: an empty caption, warned
    save(rgb(), tmp_path / "d.webp")  # no caption at all
    save(rgb(), tmp_path / "e.png")
    (tmp_path / "e.txt").write_text("a dog\nrunning\n", encoding="utf-8")

    report = check_dataset(tmp_path, default_caption=" sks ")

    captions = {i.image_path.name: i.caption for i in report.items}
    assert captions == {"a.png": "sks dog, red collar", "b.JPG": "sks dog, beach",
                        "c.png": "", "d.webp": "sks", "e.png": "a dog running"}
    assert [p.name for p in report.missing_captions] == ["d.webp"]
    by_name = {i.image_path.name: i for i in report.items}
    assert by_name["c.png"].caption_path == tmp_path / "c.txt"
    assert by_name["c.png"].caption_source == "empty caption file"
    assert by_name["d.webp"].caption_source == "default caption"
    assert by_name["a.png"].caption_path == tmp_path / "a.txt"
    assert report.to_dict()["captions_found"] == 4
    assert report.to_dict()["captions_missing"] == 1
    assert [w for w in report.warnings if "empty caption file (c.png)" in w]
    assert report.caption_sources() == {"caption file": 3, "empty caption file": 1,
                                        "default caption": 1}


def test_caption_fallback_order_folder_class_default_then_trigger(tmp_path):
    save(rgb(), tmp_path / "5_chelsea cat" / "a.png")
    save(rgb(), tmp_path / "plain" / "b.png")
    kohya = check_dataset(tmp_path, default_caption="", trigger_word="zq")
    assert [(i.caption, i.caption_source) for i in kohya.items] == [
        ("chelsea cat", "kohya folder class")]
    plain = check_dataset(tmp_path / "plain", trigger_word="zq")
    assert [(i.caption, i.caption_source) for i in plain.items] == [("zq", "trigger word")]
    nothing = check_dataset(tmp_path / "plain")
    assert [(i.caption, i.caption_source) for i in nothing.items] == [("", "no caption")]
    assert any("no caption file and no default caption" in w for w in nothing.warnings)
    listed = check_dataset(subsets=[{"path": str(tmp_path / "5_chelsea cat"),
                                     "default_caption": "tabby"}], trigger_word="zq")
    assert [(i.caption, i.caption_source) for i in listed.items] == [
        ("tabby", "folder default caption")]


def test_custom_caption_extension(tmp_path):
    save(rgb(), tmp_path / "a.png")
    (tmp_path / "a.caption").write_text("from caption file", encoding="utf-8")
    (tmp_path / "a.txt").write_text("from txt file", encoding="utf-8")
    save(rgb(), tmp_path / "b.png")
    (tmp_path / "b.txt").write_text("only a txt", encoding="utf-8")

    report = check_dataset(tmp_path, caption_extension=".caption", default_caption="trigger")

    captions = {i.image_path.name: i.caption for i in report.items}
    assert captions == {"a.png": "from caption file", "b.png": "trigger"}
    assert check_dataset(tmp_path, caption_extension="caption").items[0].caption == \
        "from caption file"


def test_windows_1252_caption_trains_with_a_warning_naming_the_file(tmp_path):
    save(rgb(), tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes("café, crème".encode("cp1252"))
    save(rgb(), tmp_path / "b.png")

    report = check_dataset(tmp_path)

    assert {i.image_path.name: i.caption for i in report.items} == {"a.png": "café, crème",
                                                                    "b.png": ""}
    assert any("a.txt is not UTF-8: read as Windows-1252" in w for w in report.warnings)


def test_binary_caption_skips_its_image_with_a_fix(tmp_path):
    save(rgb(), tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes(b"\x00\x01PK\x03\x04 zip")
    report = check_dataset(tmp_path)
    assert report.usable == 0
    assert "binary data" in reasons(report)["a.png"]


def test_orphan_caption_is_listed_as_ignored(tmp_path):
    save(rgb(), tmp_path / "cat.png")
    (tmp_path / "cat .txt").write_text("typo in the name", encoding="utf-8")

    report = check_dataset(tmp_path)

    assert report.missing_captions == [tmp_path / "cat.png"]
    assert [p.name for p in report.ignored] == ["cat .txt"]


def test_tag_frequency_counts_stripped_comma_tags():
    freq = tag_frequency(["1girl, solo,  Smile", "1girl,smile,, ", ""])
    assert freq == {"1girl": 2, "solo": 1, "smile": 2}


# ---------------------------------------------------------------- folders
def test_plain_subfolders_are_not_scanned_and_the_hint_names_kohya_folders(tmp_path):
    save(rgb(), tmp_path / "extra" / "b.png")
    save(rgb(), tmp_path / ".cache" / "hidden.png")

    flat = check_dataset(tmp_path)
    assert flat.usable == 0
    assert [p.name for p in flat.ignored] == ["extra"]
    assert "10_extra" in format_report(flat).splitlines()[-1]


def test_kohya_parent_trains_each_n_name_folder_n_times(tmp_path):
    save(rgb(), tmp_path / "10_sks dog" / "a.png")
    save(rgb(), tmp_path / "10_sks dog" / "c.png")
    (tmp_path / "10_sks dog" / "a.txt").write_text("sks dog, grass", encoding="utf-8")
    save(rgb(), tmp_path / "3_cat" / "d.png")
    save(rgb(), tmp_path / "extra" / "b.png")
    save(rgb(), tmp_path / ".cache" / "hidden.png")

    report = check_dataset(tmp_path, repeats=2)

    assert report.layout == "kohya"
    got = {i.image_path.name: (i.repeats, i.caption) for i in report.items}
    assert got == {"a.png": (20, "sks dog, grass"), "c.png": (20, "sks dog"), "d.png": (6, "cat")}
    assert [(s.path.name, s.repeats, s.images) for s in report.subsets] == [
        ("10_sks dog", 20, 2), ("3_cat", 6, 1)]
    assert report.images_per_epoch == 46
    assert [p.name for p in report.ignored] == ["extra"]
    assert any("extra/ is not a kohya N_name folder" in w for w in report.warnings)
    text = format_report(report)
    assert "10_sks dog   20 x 2 images = 40 per epoch" in text
    assert "3 images usable, 46 per epoch" in text


def test_a_folder_named_n_name_trains_n_times(tmp_path):
    save(rgb(), tmp_path / "10_chelsea cat" / "a.png")
    report = check_dataset(tmp_path / "10_chelsea cat")
    assert [(i.repeats, i.caption) for i in report.items] == [(10, "chelsea cat")]
    assert "    10_chelsea cat   10 x 1 image = 10 per epoch" in format_report(report)


# ---------------------------------------------------------------- report output
def test_report_dict_is_json_and_text_lists_every_skip(tmp_path):
    save(rgb(), tmp_path / "ok.png")
    (tmp_path / "ok.txt").write_text("sks, dog", encoding="utf-8")
    (tmp_path / "zero.jpg").write_bytes(b"")
    save(rgb(), tmp_path / "nocap.png")

    report = check_dataset(tmp_path, default_caption="sks")
    data = json.loads(json.dumps(report.to_dict()))

    assert data["root"] == str(tmp_path.resolve())
    assert data["usable"] == 2
    assert data["skipped"] == [{"path": str(tmp_path.resolve() / "zero.jpg"),
                                "reason": "empty file (0 bytes)"}]
    assert {d["image"].rsplit(os.sep, 1)[-1]: d["caption"] for d in data["items"]} == {
        "ok.png": "sks, dog", "nocap.png": "sks"}
    text = format_report(report)
    assert "2 images usable, 2 per epoch (1 with caption files, 1 without)" in text
    assert "zero.jpg: empty file (0 bytes)" in text
    assert '  nocap.png: "sks" (default caption)' in text
    assert text.splitlines()[-1].startswith("Ready to train on 2 images")
