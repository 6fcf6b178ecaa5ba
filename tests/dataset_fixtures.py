"""Dataset fixtures built from real photographs (tests/data/photos, see its README.md).

A plain helper module, not a conftest: import what you need, as with `lora_files`
(tests/ is on sys.path through its conftest): `from dataset_fixtures import make_kohya_folder`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PHOTOS_DIR = Path(__file__).parent / "data" / "photos"

# (width, height) of each photo, as tests/data/photos/README.md states.
PHOTO_SIZES: dict[str, tuple[int, int]] = {
    "chelsea.jpg": (451, 300),
    "coffee.jpg": (600, 400),
    "rocket.jpg": (640, 427),
    "astronaut.jpg": (512, 512),
    "hubble_9x16.jpg": (360, 640),
    "camera_16x9_gray.jpg": (512, 288),
}

# A typical tagger caption (24 tags): 70 CLIP tokens, so it fits one 75-token chunk.
CHELSEA_CAPTION = (
    "cat, no humans, animal focus, realistic, photo (medium), close-up, tabby cat, brown fur, "
    "striped fur, green eyes, slit pupils, looking at viewer, whiskers, pink nose, cat ears, "
    "fluffy, portrait, blurry background, depth of field, bokeh, indoors, soft lighting, "
    "film grain, brown theme"
)

# Saved in Windows-1252 with a CRLF ending (as Notepad on an old Windows would), so the bytes
# are not valid UTF-8: "é" is the single byte 0xE9.
COFFEE_CAPTION = (
    "café, coffee, coffee cup, latte art, saucer, spoon, wooden table, no humans, still life, "
    "photo (medium), realistic, from above"
)
COFFEE_CAPTION_ENCODING = "cp1252"

# A long tagger caption (41 tags): 123 CLIP tokens with the SD 1.x tokenizer, i.e. more than
# one 75-token chunk (cut at 75 unless long prompts are split into chunks), and within kohya's
# `--max_token_length 150`.
LONG_CAPTION = (
    "1girl, solo, astronaut, realistic, photo (medium), official portrait, upper body, "
    "looking at viewer, smile, teeth, short hair, brown hair, wavy hair, brown eyes, "
    "mature female, spacesuit, orange spacesuit, neck ring, black turtleneck, shoulder patch, "
    "mission patch, name tag, straps, space helmet, helmet removed, reflection, american flag, "
    "stars and stripes, space shuttle, model, grey background, studio lighting, indoors, "
    "1990s (style), film grain, sharp focus, straight-on, orange theme, makeup, lipstick, "
    "highres"
)

# Every file make_kohya_folder writes, relative to the returned `train` folder.
CAT_FOLDER = "10_chelsea cat"
COFFEE_FOLDER = "3_coffee"
LONG_FOLDER = "1_astronaut"
NOTES_FOLDER = "notes"
KOHYA_FILES: tuple[str, ...] = (
    f"{CAT_FOLDER}/chelsea.jpg",
    f"{CAT_FOLDER}/chelsea.txt",
    f"{CAT_FOLDER}/rocket.jpg",
    f"{COFFEE_FOLDER}/coffee.jpg",
    f"{COFFEE_FOLDER}/coffee.txt",
    f"{COFFEE_FOLDER}/hubble_9x16.jpg",
    f"{COFFEE_FOLDER}/hubble_9x16.txt",
    f"{LONG_FOLDER}/long caption.jpg",
    f"{LONG_FOLDER}/long caption.txt",
    f"{NOTES_FOLDER}/camera_16x9_gray.jpg",
)


def make_kohya_folder(root: Path) -> Path:
    """Build a kohya-style training folder from the test photos under `root/train`; returns it.

    kohya (sd-scripts, `library/config_util.py` and `train_util.py`) reads each `N_name`
    subfolder as a subset repeated N times per epoch whose folder class `name` is the caption of
    images without a caption file; it ignores other folders with the warning "ignore directory
    without repeats"; it reads captions as UTF-8 (a `UnicodeDecodeError` is raised for anything
    else) and stops with an assertion "caption file is empty" on a zero-byte caption.

    `train/10_chelsea cat/` (10 repeats, folder class "chelsea cat"):
      - `chelsea.jpg` (451 x 300, odd width) + `chelsea.txt`: the ordinary captioned image, a
        tagger-style booru caption of 24 tags (`CHELSEA_CAPTION`, UTF-8, one line ending in
        "\\n", 70 CLIP tokens: fits one 75-token chunk).
      - `rocket.jpg` (640 x 427, odd height, long side > 512): no caption file, so the folder
        class "chelsea cat" is its caption.

    `train/3_coffee/` (3 repeats, folder class "coffee"):
      - `coffee.jpg` (600 x 400) + `coffee.txt`: `COFFEE_CAPTION` containing "café", written in
        Windows-1252 with a CRLF ending, so the file is NOT valid UTF-8 (kohya fails on it; a
        friendlier tool says which file and how to fix it, or decodes it as a fallback).
      - `hubble_9x16.jpg` (360 x 640, 9:16 portrait) + `hubble_9x16.txt`: an EMPTY (0-byte)
        caption file, which is not the same as a missing one (kohya asserts; the folder class
        is not used for it).

    `train/1_astronaut/` (1 repeat, folder class "astronaut"):
      - `long caption.jpg` (512 x 512, a file name with a space) + `long caption.txt`:
        `LONG_CAPTION`, 41 booru tags = 123 CLIP tokens, longer than one 75-token chunk and
        within 150 (kohya's `--max_token_length 150`).

    `train/notes/` (no `N_` prefix):
      - `camera_16x9_gray.jpg` (512 x 288, 16:9, grayscale JPEG): a photo kohya never trains on
        because its folder has no repeat count (it warns and ignores the folder).

    Images per epoch as kohya counts them: 2 x 10 + 2 x 3 + 1 x 1 = 27 (if the two bad caption
    files are accepted); distinct usable images: 5.
    """
    train = Path(root) / "train"
    cat = train / CAT_FOLDER
    coffee = train / COFFEE_FOLDER
    long_folder = train / LONG_FOLDER
    notes = train / NOTES_FOLDER
    for folder in (cat, coffee, long_folder, notes):
        folder.mkdir(parents=True, exist_ok=True)

    def photo(name: str, dst: Path) -> None:
        shutil.copyfile(PHOTOS_DIR / name, dst)

    photo("chelsea.jpg", cat / "chelsea.jpg")
    (cat / "chelsea.txt").write_bytes((CHELSEA_CAPTION + "\n").encode("utf-8"))
    photo("rocket.jpg", cat / "rocket.jpg")

    photo("coffee.jpg", coffee / "coffee.jpg")
    (coffee / "coffee.txt").write_bytes(
        (COFFEE_CAPTION + "\r\n").encode(COFFEE_CAPTION_ENCODING))
    photo("hubble_9x16.jpg", coffee / "hubble_9x16.jpg")
    (coffee / "hubble_9x16.txt").write_bytes(b"")

    photo("astronaut.jpg", long_folder / "long caption.jpg")
    (long_folder / "long caption.txt").write_bytes((LONG_CAPTION + "\n").encode("utf-8"))

    photo("camera_16x9_gray.jpg", notes / "camera_16x9_gray.jpg")
    return train
