"""The real-photo test data and the kohya folder built from it are what their docs say."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from dataset_fixtures import (
    CHELSEA_CAPTION, COFFEE_CAPTION, KOHYA_FILES, LONG_CAPTION, PHOTO_SIZES, PHOTOS_DIR,
    make_kohya_folder,
)


def _readme_sizes() -> dict[str, tuple[int, int]]:
    """File -> (width, height) from the table in tests/data/photos/README.md."""
    text = (PHOTOS_DIR / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+\.jpg)` \| (\d+) x (\d+) \|", text, flags=re.MULTILINE)
    return {name: (int(w), int(h)) for name, w, h in rows}


def test_readme_lists_every_photo_with_its_real_size():
    readme = _readme_sizes()
    on_disk = sorted(p.name for p in PHOTOS_DIR.glob("*.jpg"))
    assert sorted(readme) == on_disk == sorted(PHOTO_SIZES)
    assert readme == PHOTO_SIZES
    for name, size in readme.items():
        path = PHOTOS_DIR / name
        assert path.stat().st_size < 60_000, name
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == size, name
            image.load()  # decodes completely (not truncated)
    longest = max(max(size) for size in readme.values())
    assert longest > 512
    assert any(abs(w / h - 9 / 16) < 0.01 for w, h in readme.values())  # a 9:16 portrait


def test_make_kohya_folder_builds_the_documented_files(tmp_path):
    train = make_kohya_folder(tmp_path)
    assert train == tmp_path / "train"
    written = sorted(str(p.relative_to(train)).replace("\\", "/")
                     for p in train.rglob("*") if p.is_file())
    assert written == sorted(KOHYA_FILES)
    assert sorted(p.name for p in train.iterdir()) == [
        "10_chelsea cat", "1_astronaut", "3_coffee", "notes"]

    for rel in KOHYA_FILES:
        if rel.endswith(".jpg"):
            with Image.open(train / rel) as image:
                image.load()

    cat = train / "10_chelsea cat"
    assert (cat / "chelsea.txt").read_text(encoding="utf-8") == CHELSEA_CAPTION + "\n"
    assert len(CHELSEA_CAPTION.split(", ")) == 24
    assert not (cat / "rocket.txt").exists()  # the folder class captions it

    coffee_bytes = (train / "3_coffee" / "coffee.txt").read_bytes()
    assert b"caf\xe9" in coffee_bytes and coffee_bytes.endswith(b"\r\n")
    with pytest.raises(UnicodeDecodeError):
        coffee_bytes.decode("utf-8")
    assert coffee_bytes.decode("cp1252") == COFFEE_CAPTION + "\r\n"
    assert (train / "3_coffee" / "hubble_9x16.txt").read_bytes() == b""

    long_text = (train / "1_astronaut" / "long caption.txt").read_text(encoding="utf-8")
    assert long_text == LONG_CAPTION + "\n"
    assert len(LONG_CAPTION.split(", ")) == 41
    with Image.open(train / "notes" / "camera_16x9_gray.jpg") as image:
        assert image.mode == "L"


def test_caption_token_counts_are_as_documented():
    """70 tokens fits one 75-token CLIP chunk; 123 needs a second one (and fits in 150)."""
    from transformers import CLIPTokenizer

    from lora_studio.core.paths import configs_dir

    tokenizer = CLIPTokenizer.from_pretrained(configs_dir() / "sd15" / "tokenizer")

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"]) - 2  # without start / end of text

    assert count(CHELSEA_CAPTION) == 70
    assert count(LONG_CAPTION) == 123
