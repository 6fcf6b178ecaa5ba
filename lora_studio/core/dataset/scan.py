"""Dataset folder scanning: which files are images, which are captions, and what the report holds.

A dataset is a folder of images with optional caption sidecars (`cat.txt` beside `cat.png`).
This module only looks at names and reads captions; decoding and checking images happens in
`checks.py`, turning them into training tensors in `transforms.py`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from lora_studio.core.errors import DatasetError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})

# Image formats a person may drop in that we do not train on: reported as skipped (with what to
# do), rather than silently ignored like a stray notes file.
UNSUPPORTED_IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".svg", ".psd", ".ico",
    ".raw", ".cr2", ".nef", ".arw", ".dng", ".jp2",
})

# Operating-system clutter that is never worth mentioning (hidden files are skipped as well).
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})

# Where an image's caption came from, in the order they are tried (CAPTION_FILE first).
CAPTION_FILE = "caption file"
EMPTY_CAPTION_FILE = "empty caption file"
CAPTION_FALLBACKS = ("folder default caption", "kohya folder class", "default caption",
                     "trigger word")
NO_CAPTION = "no caption"


@dataclass
class DatasetItem:
    """One usable training image and its caption."""

    image_path: Path
    caption: str
    caption_path: Path | None  # None when a fallback caption was used
    repeats: int = 1  # times per epoch (its subset's repeats)
    caption_source: str = CAPTION_FILE  # CAPTION_FILE, EMPTY_CAPTION_FILE, a fallback, NO_CAPTION
    subset: int = 0  # index into DatasetReport.subsets
    size: tuple[int, int] = (0, 0)  # (width, height) upright, as training sees it


@dataclass
class SubsetSummary:
    """A folder of the dataset as the report shows it."""

    path: Path
    repeats: int
    caption_extension: str
    default_caption: str
    kohya_class: str
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "repeats": self.repeats, "images": self.images,
                "caption_extension": self.caption_extension,
                "default_caption": self.default_caption, "kohya_class": self.kohya_class}


@dataclass
class SkippedFile:
    """A file that looked like an image but cannot be trained on, and why (for people)."""

    path: Path
    reason: str


@dataclass
class DatasetReport:
    """What a dataset check found: usable images, skipped files with reasons, missing captions."""

    root: Path
    items: list[DatasetItem]
    skipped: list[SkippedFile]
    missing_captions: list[Path]  # images without a caption file (they got a fallback)
    ignored: list[Path] = field(default_factory=list)  # not images or captions (notes, subfolders)
    default_caption: str = ""
    subsets: list[SubsetSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # nothing skipped, but worth knowing
    layout: str = "folder"  # "folder", "kohya" or "subsets"
    # the lines of `warnings` about captions that train empty (replaced when captions change)
    caption_warning_lines: list[str] = field(default_factory=list, repr=False)

    @property
    def usable(self) -> int:
        return len(self.items)

    @property
    def captions_found(self) -> int:
        return sum(1 for item in self.items if item.caption_path is not None)

    @property
    def images_per_epoch(self) -> int:
        return sum(item.repeats for item in self.items)

    def caption_sources(self) -> dict[str, int]:
        """How many images got their caption from each source, in the order tried."""
        counts = Counter(item.caption_source for item in self.items)
        order = (CAPTION_FILE, EMPTY_CAPTION_FILE, *CAPTION_FALLBACKS, NO_CAPTION)
        return {source: counts[source] for source in order if counts[source]}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (paths as strings)."""
        return {
            "root": str(self.root),
            "usable": self.usable,
            "captions_found": self.captions_found,
            "captions_missing": len(self.missing_captions),
            "default_caption": self.default_caption,
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
            "missing_captions": [str(p) for p in self.missing_captions],
            "ignored": [str(p) for p in self.ignored],
            "layout": self.layout,
            "subsets": [s.to_dict() for s in self.subsets],
            "images_per_epoch": self.images_per_epoch,
            "caption_sources": self.caption_sources(),
            "warnings": list(self.warnings),
            "items": [
                {
                    "image": str(item.image_path),
                    "caption": item.caption,
                    "caption_file": str(item.caption_path) if item.caption_path else None,
                    "caption_source": item.caption_source,
                    "repeats": item.repeats,
                    "size": list(item.size),
                }
                for item in self.items
            ],
        }


@dataclass
class FolderListing:
    """The files of a dataset folder, sorted by kind (names only, nothing decoded yet)."""

    images: list[Path] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)  # known image formats we do not read
    captions: dict[tuple[Path, str], Path] = field(default_factory=dict)  # (folder, stem) -> file
    ignored: list[Path] = field(default_factory=list)

    def caption_for(self, image_path: Path) -> Path | None:
        return self.captions.get((image_path.parent, image_path.stem))


def normalize_caption_extension(extension: str) -> str:
    """`"txt"`, `".TXT"` and `".txt"` all mean `".txt"`."""
    ext = extension.strip().lower()
    if not ext or ext == ".":
        raise DatasetError("The caption extension is empty.",
                           'Use the extension of your caption files, e.g. ".txt" or ".caption".')
    return ext if ext.startswith(".") else f".{ext}"


def _is_hidden_or_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def _sort_key(path: Path) -> tuple[str, str]:
    return (str(path).lower(), str(path))


def list_dataset_files(root: Path, caption_extension: str = ".txt", *,
                       recursive: bool = False) -> FolderListing:
    """Sort the files under `root` into images, captions, unsupported images and ignored files.

    Hidden files (`.DS_Store`, `._photo.png`) and OS clutter are left out entirely. Without
    `recursive`, subfolders are listed as ignored so a report can say they were not scanned.
    """
    caption_ext = normalize_caption_extension(caption_extension)
    listing = FolderListing()
    caption_files: list[Path] = []
    for folder, dir_names, file_names in os.walk(root):
        folder_path = Path(folder)
        dir_names[:] = sorted(d for d in dir_names if not _is_hidden_or_junk(d))
        if not recursive:
            listing.ignored.extend(folder_path / d for d in dir_names)
            dir_names[:] = []
        for name in file_names:
            if _is_hidden_or_junk(name):
                continue
            path = folder_path / name
            if not path.is_file():  # a broken link or a special file
                continue
            suffix = path.suffix.lower()
            if suffix in IMAGE_EXTENSIONS:
                listing.images.append(path)
            elif suffix == caption_ext:
                caption_files.append(path)
                listing.captions[(path.parent, path.stem)] = path
            elif suffix in UNSUPPORTED_IMAGE_EXTENSIONS:
                listing.unsupported.append(path)
            else:
                listing.ignored.append(path)
    image_keys = {(p.parent, p.stem) for p in listing.images}
    # A caption with no image beside it is probably a typo in a name: list it, do not use it.
    listing.ignored.extend(p for p in caption_files if (p.parent, p.stem) not in image_keys)
    listing.images.sort(key=_sort_key)
    listing.unsupported.sort(key=_sort_key)
    listing.ignored.sort(key=_sort_key)
    return listing


def read_caption(path: Path) -> str:
    """A caption file's text (see `read_caption_text`)."""
    return read_caption_text(path)[0]


def read_caption_text(path: Path) -> tuple[str, str]:
    """A caption file's text and its encoding: UTF-8 (a BOM is fine), else Windows-1252 (what
    Notepad wrote for years); whitespace stripped, lines joined by spaces.

    Raises DatasetError naming the file when it cannot be read or is neither encoding.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read caption file {path}: {exc.strerror or exc}",
                           "Check that the file exists and that you may read it.") from exc
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows PowerShell's `>` writes this
        raise DatasetError(f"Caption file {path.name} is UTF-16 text.",
                           "Open it in a text editor and save it as UTF-8.")
    try:
        text, encoding = data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        try:
            text, encoding = data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            raise DatasetError(
                f"Caption file {path.name} is not UTF-8 text (byte {data[exc.start]:#04x} "
                f"at position {exc.start}).",
                "Open it in a text editor and save it with UTF-8 encoding.") from exc
    if any(ord(c) < 32 and c not in "\t\n\r\f\v" for c in text):
        raise DatasetError(f"Caption file {path.name} holds binary data, not text.",
                           "Replace it with a plain-text caption (UTF-8) or delete it.")
    lines = (line.strip() for line in text.splitlines())
    return " ".join(line for line in lines if line), encoding


def tag_frequency(captions: Iterable[str]) -> dict[str, int]:
    """How often each comma-separated tag appears, as kohya writes `ss_tag_frequency`.

    Tags are stripped and lower-cased (kohya's convention); empty tags are dropped.
    """
    counts: Counter[str] = Counter()
    for caption in captions:
        for tag in caption.split(","):
            tag = tag.strip().lower()
            if tag:
                counts[tag] += 1
    return dict(counts)
