"""The bad-input corpus for dataset images, captions and training configs (issue 22): what
each file is, what must happen to it, and the writer that makes it.

Small files are committed under tests/data/bad_inputs/images/, .../captions/ and .../configs/
(under 5 KB each); `python tests/bad_input_corpus.py` writes them again (same bytes). Two are
never committed and are written at test time by `write_test_time_files`: the decompression bomb
(a valid PNG header declaring 20000x20000 over a few bytes of data, never decoded) and the 1 MB
caption. Good pictures come from tests/data/photos.

Each entry says what it is, what must happen to it (`TRAINED`: a valid image or caption that
trains, with what it trains checked by the tests; `SKIPPED`: its image is left out with a reason
holding every fragment of `says`; `REFUSED`: a config that the commands refuse with exit code
2 and a message holding `says`, except those in `accepted_by`, which do not need what is wrong).
"""

from __future__ import annotations

import io
import random
import shutil
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).parent
DATA = TESTS / "data" / "bad_inputs"
IMAGES, CAPTIONS, CONFIGS = DATA / "images", DATA / "captions", DATA / "configs"
PHOTOS = TESTS / "data" / "photos"

TRAINED, SKIPPED, REFUSED = "trained", "skipped", "refused"

# The colours of the two-colour test pictures (left half, right half) and of the white band
# along the top of the EXIF-rotated one, as a viewer shows them.
LEFT, RIGHT, BAND = (230, 30, 30), (30, 60, 220), (250, 250, 250)
PALETTE_OPAQUE = (20, 160, 40)  # the disc of the palette picture; the rest is transparent
BOMB_SIDE = 20_000
HUGE_CAPTION_BYTES = 1_000_000


@dataclass(frozen=True)
class BadInput:
    """One corpus entry: `name` (its file), `what` it is, its `outcome` (TRAINED, SKIPPED,
    REFUSED) and `says`: fragments the reason or message must hold."""

    name: str
    what: str
    outcome: str
    says: tuple[str, ...] = ()
    test_time: bool = False
    accepted_by: tuple[str, ...] = ()  # commands that need not refuse this config

    @property
    def path(self) -> Path:
        return {".toml": CONFIGS, ".json": CONFIGS, ".txt": CAPTIONS}.get(
            Path(self.name).suffix, IMAGES) / self.name


IMAGE_INPUTS = (
    BadInput("zero_bytes.png", "an empty file", SKIPPED, ("empty file (0 bytes)",)),
    BadInput("truncated.png", "a PNG cut in half (in its image data)", SKIPPED,
             ("truncated or corrupt", "re-export it")),
    BadInput("truncated.jpg", "a JPEG cut in half (in its scan data)", SKIPPED,
             ("truncated or corrupt", "re-export it")),
    BadInput("truncated_header.jpg", "a JPEG cut in its header (a download stopped early)",
             SKIPPED, ("truncated or corrupt", "re-export it")),
    BadInput("text.jpg", "a text file named .jpg", SKIPPED, ("not an image",)),
    BadInput("one_pixel.png", "a 1x1 PNG", SKIPPED, ("too small: 1x1", "at least")),
    BadInput("bomb_20000x20000.png", "a PNG declaring 20000x20000 pixels over 40 bytes of data",
             SKIPPED, ("too large", "downscale it"), test_time=True),
    BadInput("animated.gif", "a 3-frame animated GIF", SKIPPED,
             ("unsupported format .gif", "PNG")),
    BadInput("animated.webp", "a 3-frame animated WebP (red, green, blue frames)", SKIPPED,
             ("animated (3 frames)", "save the frame")),
    # valid pictures in unusual forms: trained, and what they train as is checked
    BadInput("cmyk.jpg", "a CMYK JPEG: red left half, blue right half", TRAINED),
    BadInput("gray16.png", "a 16-bit grayscale PNG (mode I;16): a black-to-white ramp", TRAINED),
    BadInput("palette_transparent.png", "a palette PNG: a green disc on transparency", TRAINED),
    BadInput("exif_rotated.jpg", "a JPEG stored on its side with EXIF orientation 6: upright "
             "it is 96x64, red | blue with a white band along the top", TRAINED),
)

# Caption files: a test pairs each with a good photo (`assemble_dataset`).
CAPTION_INPUTS = (
    BadInput("huge.txt", "1 MB of comma-separated tags", TRAINED,
             ("75 of", "tokens kept"), test_time=True),
    BadInput("binary.txt", "binary data with NUL bytes", SKIPPED,
             ("caption unusable", "binary data")),
    BadInput("empty.txt", "an empty caption file", TRAINED, ("empty caption file",)),
    BadInput("windows_1252.txt", "Windows-1252 text (café), as old Notepad saved it", TRAINED,
             ("not UTF-8", "Windows-1252")),
    BadInput("not_text.txt", "bytes that are neither UTF-8 nor Windows-1252", SKIPPED,
             ("caption unusable", "not UTF-8 text", "save it with UTF-8")),
    BadInput("utf16.txt", "UTF-16 text with a BOM, as Windows PowerShell 5 writes it", SKIPPED,
             ("caption unusable", "UTF-16", "save it as UTF-8")),
)

# Configs for `lora-studio train | memory | dataset check --config`. Each is `base.toml` (a
# valid config: the tiny model, the test photos, 2 steps) with one thing wrong.
CONFIG_INPUTS = (
    BadInput("unknown_key.toml", "a misspelt key (learnig_rate)", REFUSED,
             ("train.learnig_rate", "unknown key", "Did you mean learning_rate?")),
    BadInput("key_in_wrong_section.toml", "rank under [train] (it is a [lora] key)", REFUSED,
             ("train.rank", "unknown key", "lora.rank")),
    BadInput("unknown_section.toml", "a misspelt section ([trian])", REFUSED,
             ("trian", "unknown section", "Did you mean [train]?")),
    BadInput("wrong_type.toml", 'a string for a number (learning_rate = "1e-4")', REFUSED,
             ("train.learning_rate: must be float", "without quotes")),
    BadInput("negative_learning_rate.toml", "learning_rate = -1e-4", REFUSED,
             ("train.learning_rate: must be > 0", "default")),
    BadInput("rank_zero.toml", "rank = 0", REFUSED, ("lora.rank: must be >= 1", "default")),
    BadInput("resolution_7.toml", "resolution = 7", REFUSED,
             ("dataset.resolution: must be >= 8", "default")),
    BadInput("truncated.toml", "a config cut off mid-line", REFUSED,
             ("is not valid TOML", "end of document", "quickstart.toml")),
    BadInput("binary_junk.toml", "256 random bytes", REFUSED,
             ("is not a TOML text file", "quickstart.toml")),
    BadInput("json_config.json", "the settings written as JSON", REFUSED,
             ("is not valid TOML", "looks like JSON", "quickstart.toml")),
    BadInput("missing_dataset.toml", "dataset.path names a folder that does not exist", REFUSED,
             ("no_such_dataset_folder", "does not exist"),
             accepted_by=("memory",)),  # estimates from the config's buckets, and says so
    BadInput("missing_model.toml", "model.base names a folder that does not exist", REFUSED,
             ("no_such_model_folder", "does not exist"),
             accepted_by=("dataset check",)),  # a dataset check needs no model
    BadInput("utf8_bom.toml", "base.toml saved with a UTF-8 BOM (as Notepad does)", TRAINED),
)


def entry(name: str) -> BadInput:
    return next(e for e in IMAGE_INPUTS + CAPTION_INPUTS + CONFIG_INPUTS if e.name == name)


# ----------------------------------------------------------------------------- images
def two_colours(size: tuple[int, int] = (96, 64)):
    """A picture whose left half is LEFT and right half RIGHT."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, LEFT)
    ImageDraw.Draw(image).rectangle((size[0] // 2, 0, size[0] - 1, size[1] - 1), fill=RIGHT)
    return image


def _encoded(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _noise(size: tuple[int, int]):
    from PIL import Image

    rng = random.Random(22)
    return Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(3 * size[0]
                                                                                 * size[1])))


def _image_writers() -> dict:
    from PIL import Image, ImageDraw

    def gray16(path):
        ramp = Image.new("I;16", (96, 64))
        ramp.putdata([round(x * 65535 / 95) for _ in range(64) for x in range(96)])
        ramp.save(path, format="PNG")

    def palette(path):
        image = Image.new("P", (96, 64), 0)
        image.putpalette([0, 0, 0, *PALETTE_OPAQUE] + [0] * 762)
        ImageDraw.Draw(image).ellipse((16, 8, 80, 56), fill=1)
        image.save(path, format="PNG", transparency=0)

    def animated(path, fmt, **options):
        frames = [Image.new("RGB", (80, 80), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
        frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100,
                       loop=0, **options)

    def exif_rotated(path):
        upright = two_colours()
        ImageDraw.Draw(upright).rectangle((0, 0, 95, 15), fill=BAND)
        exif = Image.Exif()
        exif[0x0112] = 6  # "turn 90 degrees clockwise to view": stored turned the other way
        upright.transpose(Image.Transpose.ROTATE_90).save(path, format="JPEG", quality=92,
                                                          exif=exif)

    png, jpg = _encoded(two_colours(), "PNG"), _encoded(_noise((96, 96)), "JPEG", quality=50)
    return {
        "zero_bytes.png": lambda p: p.write_bytes(b""),
        "truncated.png": lambda p: p.write_bytes(png[: len(png) // 2]),
        "truncated.jpg": lambda p: p.write_bytes(jpg[: len(jpg) // 2]),
        "truncated_header.jpg": lambda p: p.write_bytes(jpg[:300]),
        "text.jpg": lambda p: p.write_text("These are my holiday notes, not a picture.\n",
                                           encoding="utf-8"),
        "one_pixel.png": lambda p: Image.new("RGB", (1, 1), (9, 9, 9)).save(p, format="PNG"),
        "animated.gif": lambda p: animated(p, "GIF"),
        "animated.webp": lambda p: animated(p, "WEBP", lossless=True),
        "cmyk.jpg": lambda p: two_colours().convert("CMYK").save(p, format="JPEG", quality=95),
        "gray16.png": gray16,
        "palette_transparent.png": palette,
        "exif_rotated.jpg": exif_rotated,
    }


def write_bomb(path: Path, side: int = BOMB_SIDE) -> Path:
    """A PNG whose header declares side x side RGB pixels over a few bytes of data: the header
    is all a safe reader looks at; decoding it would need side * side * 3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------------- captions
_CAPTIONS: dict[str, bytes] = {
    "binary.txt": b"PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00!\x00cat",
    "empty.txt": b"",
    "windows_1252.txt": "café, coffee cup, latte art\r\n".encode("cp1252"),
    "not_text.txt": b"caf\x81, coffee \x8d\x8f\x90 cup",
    "utf16.txt": "a cat on a sofa\r\n".encode("utf-16"),
}


def huge_caption(size: int = HUGE_CAPTION_BYTES) -> str:
    """`size` characters of distinct comma-separated tags ("tag 0, tag 1, ...")."""
    text = ", ".join(f"tag {i}" for i in range(size // 6))
    return text[:size].rstrip(", ")


# ----------------------------------------------------------------------------- configs
BASE_CONFIG = """\
schema_version = 1
[model]
base = "tiny"
[dataset]
path = "../../photos"
resolution = 64
[train]
steps = 2
learning_rate = 1e-4
"""


def _configs() -> dict[str, bytes]:
    def changed(old: str, new: str) -> bytes:
        assert old in BASE_CONFIG
        return BASE_CONFIG.replace(old, new).encode("utf-8")

    return {
        "base.toml": BASE_CONFIG.encode("utf-8"),
        "unknown_key.toml": changed("learning_rate", "learnig_rate"),
        "key_in_wrong_section.toml": changed("steps = 2", "steps = 2\nrank = 8"),
        "unknown_section.toml": changed("[train]", "[trian]"),
        "wrong_type.toml": changed("learning_rate = 1e-4", 'learning_rate = "1e-4"'),
        "negative_learning_rate.toml": changed("1e-4", "-1e-4"),
        "rank_zero.toml": (BASE_CONFIG + "[lora]\nrank = 0\n").encode("utf-8"),
        "resolution_7.toml": changed("resolution = 64", "resolution = 7"),
        "truncated.toml": BASE_CONFIG.encode("utf-8")[:120],  # "learning_rate" without a value
        "binary_junk.toml": random.Random(7).randbytes(256),
        "json_config.json": b'{"dataset": {"path": "../../photos"}, "train": {"steps": 2}}\n',
        "missing_dataset.toml": changed('"../../photos"', '"no_such_dataset_folder"'),
        "missing_model.toml": changed('"tiny"', '"no_such_model_folder"'),
        "utf8_bom.toml": b"\xef\xbb\xbf" + BASE_CONFIG.encode("utf-8"),
    }


# ----------------------------------------------------------------------------- writers
def write_committed(root: Path = DATA) -> list[Path]:
    """Write every committed file of this corpus under `root` (images/, captions/, configs/)."""
    written = []
    groups = ((root / "images", {n: w for n, w in _image_writers().items()}),
              (root / "captions", {n: (lambda p, b=b: p.write_bytes(b))
                                   for n, b in _CAPTIONS.items()}),
              (root / "configs", {n: (lambda p, b=b: p.write_bytes(b))
                                  for n, b in _configs().items()}))
    for folder, writers in groups:
        folder.mkdir(parents=True, exist_ok=True)
        for name, write in writers.items():
            write(folder / name)
            written.append(folder / name)
    return written


def write_test_time_files(folder: Path) -> dict[str, Path]:
    """Write the entries never committed (the bomb, the 1 MB caption) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    huge = folder / "huge.txt"
    huge.write_text(huge_caption(), encoding="utf-8")
    return {"bomb_20000x20000.png": write_bomb(folder / "bomb_20000x20000.png"),
            "huge.txt": huge}


def corpus_file(name: str, generated: Mapping[str, Path] | None = None) -> Path:
    """Where entry `name` is: committed, or among the test-time files `generated`."""
    if generated and name in generated:
        return generated[name]
    path = entry(name).path
    assert path.is_file(), f"{path} is missing: run python tests/bad_input_corpus.py"
    return path


def assemble_dataset(folder: Path, *, images: Iterable[str] = (),
                     captioned_photos: Mapping[str, str] | None = None,
                     photos: Iterable[str] = (), generated: Mapping[str, Path] | None = None
                     ) -> Path:
    """A dataset folder: the corpus `images` (by entry name), the test `photos` given as they
    are, and `captioned_photos` {photo: caption entry} whose caption file (named after the
    photo) is that corpus caption. Test-time entries come from `generated`
    (`write_test_time_files`), or are written into a scratch folder beside `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    captioned_photos = dict(captioned_photos or {})
    wanted = set(images) | set(captioned_photos.values())
    if generated is None and any(entry(n).test_time for n in wanted):
        generated = write_test_time_files(folder.parent / f"{folder.name}-generated")
    for name in images:
        shutil.copyfile(corpus_file(name, generated), folder / name)
    for photo in photos:
        shutil.copyfile(PHOTOS / photo, folder / photo)
    for photo, caption in captioned_photos.items():
        shutil.copyfile(PHOTOS / photo, folder / photo)
        shutil.copyfile(corpus_file(caption, generated), folder / f"{Path(photo).stem}.txt")
    return folder


if __name__ == "__main__":
    for written in write_committed():
        print(written.relative_to(DATA))
