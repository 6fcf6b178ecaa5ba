"""Bad dataset images, captions and training configs (tests/bad_input_corpus.py) through the
command line: each bad file is skipped or refused with a short message saying what to do (exit
code 2 where it makes the command impossible, never a traceback), and the unusual but valid
pictures train as a viewer shows them."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bad_input_corpus import (
    BAND,
    CAPTION_INPUTS,
    CONFIG_INPUTS,
    CONFIGS,
    IMAGE_INPUTS,
    LEFT,
    PALETTE_OPAQUE,
    REFUSED,
    RIGHT,
    SKIPPED,
    TRAINED,
    assemble_dataset,
    corpus_file,
    write_test_time_files,
)
from lora_studio.cli import main

REPO = Path(__file__).resolve().parents[2]
SKIPPED_IMAGES = [e for e in IMAGE_INPUTS if e.outcome == SKIPPED]
VALID_IMAGES = [e.name for e in IMAGE_INPUTS if e.outcome == TRAINED]
# each corpus caption beside a photo of its own
CAPTIONED = dict(zip(("chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg",
                      "hubble_9x16.jpg", "camera_16x9_gray.jpg"),
                     (e.name for e in CAPTION_INPUTS)))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """The bomb and the 1 MB caption, written once for the module."""
    return write_test_time_files(tmp_path_factory.mktemp("generated"))


def run(capsys, *args: str | Path) -> tuple[int, str, str]:
    """`lora-studio ARGS` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_short_error(err: str, says: tuple[str, ...] = ()) -> None:
    """One `error: what` + `fix` message ending stderr (training may log what it did before
    it), holding `says`; never a traceback."""
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = err.strip().splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1 and len(lines) - starts[0] <= 3, err
    message = "\n".join(lines[starts[0]:])
    for fragment in says:
        assert fragment in message, (fragment, err)


# ---------------------------------------------------------------------- images
def test_the_corpus_images_are_what_they_say(generated):
    def opened(name: str) -> Image.Image:
        return Image.open(corpus_file(name, generated))

    assert opened("cmyk.jpg").mode == "CMYK"
    assert opened("gray16.png").mode == "I;16" and opened("gray16.png").getextrema() == (0, 65535)
    palette = opened("palette_transparent.png")
    assert palette.mode == "P" and palette.info["transparency"] == 0
    assert [opened(n).n_frames for n in ("animated.gif", "animated.webp")] == [3, 3]
    exif = opened("exif_rotated.jpg")
    assert exif.size == (64, 96) and exif.getexif()[0x0112] == 6
    bomb = corpus_file("bomb_20000x20000.png", generated).read_bytes()
    assert len(bomb) < 200 and bomb[12:24] == b"IHDR" + struct.pack(">II", 20_000, 20_000)


def test_every_bad_image_is_skipped_with_its_reason_and_the_rest_is_usable(
        tmp_path, capsys, generated):
    folder = assemble_dataset(tmp_path / "mixed", images=[e.name for e in IMAGE_INPUTS],
                              photos=["chelsea.jpg"], generated=generated)

    code, out, err = run(capsys, "dataset", "check", folder, "--resolution", "64", "--json")
    assert code == 0, err
    report = json.loads(out)
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {e.name for e in SKIPPED_IMAGES}
    for bad in SKIPPED_IMAGES:
        for fragment in bad.says:
            assert fragment in skipped[bad.name], (bad.name, skipped[bad.name])
    assert sorted(Path(i["image"]).name for i in report["items"]) == sorted(
        VALID_IMAGES + ["chelsea.jpg"])
    exif = next(i for i in report["items"] if i["image"].endswith("exif_rotated.jpg"))
    assert exif["size"] == [96, 64]  # upright; stored 64 wide and 96 high

    code, out, _ = run(capsys, "dataset", "check", folder, "--resolution", "64")
    assert code == 0
    for bad in SKIPPED_IMAGES:  # one line per file, its reason beside its name
        assert f"  {bad.name}: {skipped[bad.name]}" in out.splitlines()
    assert out.strip().splitlines()[-1].startswith("Ready to train on 5 images.")


def test_a_folder_with_nothing_usable_exits_2_saying_what_to_do(tmp_path, capsys, generated):
    folder = assemble_dataset(tmp_path / "bad", images=[e.name for e in SKIPPED_IMAGES],
                              generated=generated)

    code, out, err = run(capsys, "dataset", "check", folder)

    assert code == 2 and "Traceback" not in err
    assert "0 images usable" in out and f"{len(SKIPPED_IMAGES)} files skipped" in out
    assert out.strip().splitlines()[-1] == (
        "Nothing usable: every image was skipped. Fix or replace the files listed above, then "
        "check again.")


def _pixels(preview_dir: Path, stem: str) -> Image.Image:
    [path] = preview_dir.glob(f"*_{stem}.train.png")
    image = Image.open(path)
    assert image.size == (64, 64) and image.mode == "RGB"  # 96x64 -> a 64x64 centre crop
    return image


def _near(pixel, expected, tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


def test_unusual_valid_images_train_as_a_viewer_shows_them(tmp_path, capsys):
    """`dataset preview` writes the exact pixels training uses: CMYK in its colours, 16 bits
    scaled (not clipped white), transparency on white, the EXIF-rotated picture upright."""
    folder = assemble_dataset(tmp_path / "valid", images=VALID_IMAGES)
    out_dir = tmp_path / "preview"

    code, out, err = run(capsys, "dataset", "preview", folder, "--resolution", "64",
                         "--out", out_dir)
    assert code == 0, err

    # 96x64 pictures at 64 px: not resized, the middle 64 columns (16..79) kept
    cmyk = _pixels(out_dir, "cmyk")
    viewer = Image.open(folder / "cmyk.jpg").convert("RGB")  # Pillow's own CMYK -> RGB
    for x, colour in ((8, LEFT), (56, RIGHT)):
        assert _near(cmyk.getpixel((x, 32)), colour)
        assert _near(cmyk.getpixel((x, 32)), viewer.getpixel((x + 16, 32)), 2)

    ramp = [_pixels(out_dir, "gray16").getpixel((x, 32)) for x in range(64)]
    assert all(r == g == b for r, g, b in ramp)
    expected = [round((x + 16) * 255 / 95) for x in range(64)]  # 0..65535 over 96 columns
    assert all(abs(got[0] - want) <= 1 for got, want in zip(ramp, expected)), ramp

    palette = _pixels(out_dir, "palette_transparent")
    assert palette.getpixel((32, 32)) == PALETTE_OPAQUE  # the disc
    assert palette.getpixel((32, 1)) == (255, 255, 255)  # transparency on white

    upright = _pixels(out_dir, "exif_rotated")
    assert _near(upright.getpixel((32, 4)), BAND)  # the band is along the top
    assert _near(upright.getpixel((8, 40)), LEFT) and _near(upright.getpixel((56, 40)), RIGHT)


# ---------------------------------------------------------------------- captions
def test_bad_captions_are_reported_one_by_one_and_never_stop_the_check(
        tmp_path, capsys, generated):
    folder = assemble_dataset(tmp_path / "captions", captioned_photos=CAPTIONED,
                              generated=generated)

    code, out, err = run(capsys, "dataset", "check", folder, "--resolution", "64", "--json")
    assert code == 0, err
    report = json.loads(out)
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    items = {Path(i["image"]).name: i for i in report["items"]}
    for photo, caption in CAPTIONED.items():
        bad = next(e for e in CAPTION_INPUTS if e.name == caption)
        if bad.outcome == SKIPPED:  # its image is left out, and the reason names the file
            assert photo not in items
            assert all(f in skipped[photo] for f in (*bad.says, Path(photo).stem + ".txt"))
        else:
            assert photo in items and photo not in skipped
    assert items["rocket.jpg"]["caption_source"] == "empty caption file"
    assert items["astronaut.jpg"]["caption"] == "café, coffee cup, latte art"
    assert any("astronaut.txt is not UTF-8" in w and "Windows-1252" in w
               for w in report["warnings"])
    assert any("empty caption file (rocket.jpg)" in w for w in report["warnings"])
    [long] = report["training"]["long_captions"]  # the 1 MB caption: trained, cut at 75
    assert Path(long["image"]).name == "chelsea.jpg" and long["kept"] == 75
    assert long["tokens"] > 100_000 and long["first_dropped_tag"]

    code, out, _ = run(capsys, "dataset", "check", folder, "--resolution", "64")
    assert code == 0
    assert "  chelsea.jpg: 75 of" in out and "tokens kept, cut from" in out


def test_preview_of_a_1_mb_caption_prints_a_short_cut(tmp_path, capsys, generated):
    folder = assemble_dataset(tmp_path / "huge", captioned_photos={"chelsea.jpg": "huge.txt"},
                              generated=generated)

    code, out, err = run(capsys, "dataset", "preview", folder, "--resolution", "64",
                         "--out", tmp_path / "preview")

    assert code == 0, err
    assert len(out) < 2_000, out[:3000]  # not the megabyte the text encoder does not read
    assert "tokens cut): 21, tag 22, tag 23" in out and "more characters)" in out
    [caption] = (tmp_path / "preview").glob("*.caption.txt")
    assert caption.read_text(encoding="utf-8").startswith("tag 0, tag 1")


class _SpyTokenizer:
    """A tokenizer that records every text it is given."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.texts = tokenizer, []

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)

    def __call__(self, text, *args, **kwargs):
        self.texts += [text] if isinstance(text, str) else list(text)
        return self.tokenizer(text, *args, **kwargs)


@pytest.mark.parametrize("max_token_length", [75, 225])
def test_a_training_step_tokenizes_only_the_head_of_a_1_mb_caption(max_token_length, generated):
    """Every step whose captions are not cached tokenizes them: a 1 MB caption costs what its
    first few thousand characters cost, and gives the same ids."""
    import torch

    from lora_studio.core.dataset.captions import caption_token_ids, caption_tokenizer

    huge = generated["huge.txt"].read_text(encoding="utf-8")
    spy = _SpyTokenizer(caption_tokenizer())
    ids = caption_token_ids(spy, [huge, "a cat"], max_token_length)
    assert max(len(text) for text in spy.texts) < 20_000
    head = ", ".join(f"tag {i}" for i in range(300))  # about 900 tokens: past any window
    assert torch.equal(ids, caption_token_ids(caption_tokenizer(), [head, "a cat"],
                                              max_token_length))


# ---------------------------------------------------------------------- configs
COMMANDS = {
    "train": lambda cfg, out: ["train", cfg, "--set", f"output.path={out}"],
    "memory": lambda cfg, out: ["memory", cfg],
    "dataset check": lambda cfg, out: ["dataset", "check", "--config", cfg],
}
REFUSED_CONFIGS = [e for e in CONFIG_INPUTS if e.outcome == REFUSED]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("bad", REFUSED_CONFIGS, ids=[e.name for e in REFUSED_CONFIGS])
def test_bad_configs_exit_2_with_one_short_message(bad, command, tmp_path, capsys):
    args = COMMANDS[command](corpus_file(bad.name), tmp_path / "out")

    code, out, err = run(capsys, *args)

    if command in bad.accepted_by:
        assert code == 0, err
        return
    assert code == 2, (out, err)
    assert_short_error(err.replace("\r", ""), bad.says)
    assert not (tmp_path / "out" / "lora.safetensors").exists()


def test_a_config_with_a_utf8_bom_reads_as_the_same_config(capsys):
    from lora_studio.core.train.config import load_config

    assert load_config(corpus_file("utf8_bom.toml")) == load_config(CONFIGS / "base.toml")
    code, out, err = run(capsys, "dataset", "check", "--config", corpus_file("utf8_bom.toml"))
    assert code == 0, err


def test_presets_are_read_as_configs_are(capsys):
    """The Train tab's "Load preset" reads TOML the same way: a junk file is a ConfigError
    (shown as a message), never an exception."""
    from lora_studio.core.errors import ConfigError
    from lora_studio.core.train.presets import read_preset

    for name, says in (("binary_junk.toml", "is not a TOML text file"),
                       ("json_config.json", "looks like JSON")):
        with pytest.raises(ConfigError, match=says) as info:
            read_preset(corpus_file(name))
        assert info.value.key == "preset" and "quickstart.toml" in info.value.fix
    assert read_preset(corpus_file("utf8_bom.toml")).dataset.resolution == 64


@pytest.mark.parametrize("config, says", [
    ("nowhere.toml", ("file not found", "nowhere.toml", "quickstart.toml")),
    (".", ("is a folder, not a config file", "Give the .toml file")),
])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_config_path_that_is_no_file_exits_2(config, says, command, tmp_path, capsys):
    code, _, err = run(capsys, *COMMANDS[command](CONFIGS / config, tmp_path / "out"))
    assert code == 2
    assert_short_error(err, says)


SET_JUNK = [
    ("garbage", ("override must look like section.key=value", "--set train.learning_rate=")),
    ("train.learning_rate=fast", ("train.learning_rate: must be a number", "e.g. --set")),
    ("train.learnig_rate=1e-4", ("train.learnig_rate: unknown key", "learning_rate?")),
    ("trian.steps=2", ("trian: unknown section", "Did you mean [train]?")),
    ("train.steps=1.5", ("train.steps: must be int, got 1.5",)),
    ("lora.rank=-3", ("lora.rank: must be >= 1, got -3", "The default is 16.")),
    ("dataset.resolution=", ("dataset.resolution: must be a number, got ''",)),
    ("train.cache_latents=maybe", ("train.cache_latents: must be true or false",)),
]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("item, says", SET_JUNK, ids=[s for s, _ in SET_JUNK])
def test_set_junk_exits_2_naming_the_key(item, says, command, tmp_path, capsys):
    args = COMMANDS[command](CONFIGS / "base.toml", tmp_path / "out") + ["--set", item]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert_short_error(err, says)


# ---------------------------------------------------------------------- real processes
def _lora_studio(*args, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "lora_studio", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=180)


def test_real_processes_exit_2_without_a_traceback(tmp_path, generated):
    folder = assemble_dataset(tmp_path / "bad", images=["text.jpg", "truncated_header.jpg",
                                                        "animated.webp", "bomb_20000x20000.png"],
                              generated=generated)
    checked = _lora_studio("dataset", "check", folder, cwd=tmp_path)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert "Nothing usable: every image was skipped" in checked.stdout

    trained = _lora_studio("train", corpus_file("binary_junk.toml"), cwd=tmp_path)
    assert trained.returncode == 2
    assert_short_error(trained.stderr, ("is not a TOML text file",))


# ---------------------------------------------------------------------- training
def test_training_on_good_and_bad_images_trains_the_good_and_names_the_bad(
        tmp_path, capsys, generated, one_torch_thread):
    bad = ["zero_bytes.png", "text.jpg", "truncated.jpg", "animated.webp",
           "bomb_20000x20000.png"]
    folder = assemble_dataset(tmp_path / "data", images=bad, photos=["chelsea.jpg"],
                              captioned_photos={"coffee.jpg": "binary.txt",
                                                "rocket.jpg": "empty.txt"},
                              generated=generated)
    config = tmp_path / "train.toml"
    config.write_text(f'schema_version = 1\n[model]\nbase = "tiny"\n[dataset]\n'
                      f'path = "{folder.as_posix()}"\nresolution = 32\ntrigger_word = "zq"\n'
                      '[lora]\ntargets = "attention"\n[train]\nsteps = 2\n'
                      '[sample]\nevery = 0\n[checkpoint]\nevery = 0\n', encoding="utf-8")

    code, out, err = run(capsys, "train", config, "--events-json",
                         "--set", f"output.path={tmp_path / 'out'}")

    assert code == 0, err[-3000:]
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert events[-1]["event"] == "Finished"
    logs = [e["message"] for e in events if e["event"] == "Log"]
    for name in bad + ["coffee.jpg"]:
        assert any(m.startswith(f"Skipped {name}: ") for m in logs), (name, logs)
    assert any("binary data" in m for m in logs if m.startswith("Skipped coffee.jpg"))
    assert any("Training: 2 images per epoch" in m for m in logs), logs  # chelsea, rocket
    assert (tmp_path / "out" / "lora.safetensors").is_file()
    saved = (tmp_path / "out" / "events.jsonl").read_text(encoding="utf-8")
    assert all(f"Skipped {name}: " in saved for name in bad)
