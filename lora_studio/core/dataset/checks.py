"""Checking a dataset folder before training: every image decoded once, every problem reported.

One bad file never stops training: it is skipped, and the report says which file and why (empty,
not an image, truncated, too small, too large). Images are fully decoded here, so a truncated
file is caught now and not halfway through a training run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from lora_studio.core.dataset.scan import (
    CAPTION_FALLBACKS,
    CAPTION_FILE,
    EMPTY_CAPTION_FILE,
    IMAGE_EXTENSIONS,
    NO_CAPTION,
    DatasetItem,
    DatasetReport,
    SkippedFile,
    SubsetSummary,
    list_dataset_files,
    read_caption_text,
    tag_frequency,
)
from lora_studio.core.dataset.scan_cache import ImageCheckCache
from lora_studio.core.dataset.subsets import Subset, resolve_subsets
from lora_studio.core.dataset.transforms import decode_rgb, max_image_pixels
from lora_studio.core.errors import DatasetError

__all__ = ["check_dataset", "check_image", "fallback_caption", "format_report",
           "min_image_side", "refresh_caption_warnings", "tag_frequency"]

# EXIF orientations that turn the picture by 90 degrees (width and height swap when upright).
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})


def min_image_side(resolution: int) -> int:
    """The smallest side an image may have to be trained, the one rule for the check, the
    Dataset tab and training: 64 px (or the resolution when that is smaller). An image smaller
    than its bucket is still trained, upscaled, and the report says so."""
    return min(64, resolution)


_SUPPORTED = "PNG, JPEG, WebP or BMP"


def check_image(path: Path, *, min_size: int = 64, max_pixels: int | None = None) -> str | None:
    """Why `path` cannot be trained on, or None when it is a usable image.

    The size is read from the header first, so a decompression bomb is never decoded.
    """
    return inspect_image(path, min_size=min_size, max_pixels=max_pixels)[0]


def _upright_size(img: Image.Image) -> tuple[int, int]:
    width, height = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: transforms.upright leaves such an image as it is
        orientation = 1
    return (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)


def inspect_image(path: Path, *, min_size: int = 64,
                  max_pixels: int | None = None) -> tuple[str | None, tuple[int, int]]:
    """(why `path` cannot be trained on or None, its upright (width, height) or (0, 0))."""
    limit = max_pixels if max_pixels is not None else max_image_pixels()
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)", (0, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        return (f"too large: over {limit:,} pixels, Pillow's safety limit against "
                "decompression bombs; downscale it"), (0, 0)
    except UnidentifiedImageError:
        return (f"not an image: its content is not {_SUPPORTED} data, whatever its name "
                "says"), (0, 0)
    except OSError as exc:
        if exc.errno is None:  # Pillow's own ("Truncated File Read"): the file, not the disk
            return f"truncated or corrupt image ({exc}); re-export it or remove it", (0, 0)
        return f"cannot be read: {exc.strerror or exc}; check that you may read it", (0, 0)
    except Exception as exc:  # a malformed header can raise almost anything inside Pillow
        return f"corrupt image header: {exc}", (0, 0)
    with img:
        width, height = img.size
        if width * height > limit:
            return (f"too large: {width}x{height} is {width * height:,} pixels, over the "
                    f"{limit:,}-pixel safety limit against decompression bombs; downscale "
                    "it"), (width, height)
        if width < min_size or height < min_size:
            return (f"too small: {width}x{height} px, needs at least {min_size} px on each "
                    "side"), (width, height)
        frames = getattr(img, "n_frames", 1) if img.format != "MPO" else 1  # MPO: camera JPEG
        if frames > 1:
            return (f"animated ({frames} frames): training uses still pictures; save the frame "
                    "you want as PNG or JPEG"), (width, height)
        size = _upright_size(img)
        if img.format == "JPEG" and min_size > 0:
            # Decode at a reduced scale: faster, and every byte of the file is still read.
            img.draft(img.mode, (min_size, min_size))
        try:
            decode_rgb(img)
        except Exception as exc:  # every decoder failure means the same to a person: re-export
            return f"truncated or corrupt image data ({exc}); re-export it or remove it", size
    return None, size


def check_dataset(root: str | os.PathLike[str] | None = None, *,
                  subsets: Sequence[dict[str, Any]] = (), caption_extension: str = ".txt",
                  default_caption: str = "", trigger_word: str = "", repeats: int = 1,
                  min_size: int = 64, max_pixels: int | None = None,
                  warn_uncaptioned: bool = True, use_cache: bool = True,
                  between: Callable[[], None] = lambda: None) -> DatasetReport:
    """Find the dataset's folders (a plain folder, a kohya folder of `N_name` subfolders, or
    the listed `subsets`), decode every image: what is usable, what is skipped and why.

    An image without a caption file is captioned by the first of its folder's default caption,
    its kohya folder's class, `default_caption` and `trigger_word` that is set (the report
    counts each); an empty caption file is an empty caption, with a warning. Raises
    DatasetError only when a folder is not readable. `warn_uncaptioned=False` leaves the
    warning about images with no caption at all to the caller (regularization skips them).
    An image checked before and unchanged since is not decoded again (`scan_cache`).
    `between()` runs before each image is decoded (where a training run's cancel lands); what
    was checked before it raised stays in the cache.
    """
    layout = resolve_subsets(root, subsets=subsets, repeats=repeats,
                             caption_extension=caption_extension)
    shown_root = layout.root or Path(os.path.commonpath([s.path for s in layout.subsets]))
    report = DatasetReport(root=shown_root, items=[], skipped=[], missing_captions=[],
                           default_caption=default_caption.strip(), layout=layout.kind,
                           warnings=list(layout.warnings))
    fallbacks = (default_caption.strip(), trigger_word.strip())
    for number, subset in enumerate(layout.subsets):
        report.subsets.append(SubsetSummary(subset.path, subset.repeats,
                                            subset.caption_extension, subset.default_caption,
                                            subset.kohya_class))
        cache = ImageCheckCache(subset.path, enabled=use_cache)
        try:
            _check_subset(report, number, subset, fallbacks, min_size, max_pixels, cache,
                          between)
        finally:
            cache.save()
    if layout.kind == "kohya":  # a plain folder's listing already names its subfolders
        report.ignored.extend(layout.ignored_folders)
    folders = {s.path for s in layout.subsets}
    report.ignored = sorted((p for p in set(report.ignored) if p not in folders),
                            key=lambda p: (str(p).lower(), str(p)))
    report.skipped.sort(key=lambda s: (str(s.path).lower(), str(s.path)))
    refresh_caption_warnings(report, warn_uncaptioned)
    return report


def _check_subset(report: DatasetReport, number: int, subset: Subset,
                  fallbacks: tuple[str, str], min_size: int, max_pixels: int | None,
                  cache: ImageCheckCache, between: Callable[[], None]) -> None:
    listing = list_dataset_files(subset.path, subset.caption_extension)
    report.ignored.extend(listing.ignored)
    report.skipped.extend(
        SkippedFile(path, f"unsupported format {path.suffix.lower()}: save it as {_SUPPORTED}")
        for path in listing.unsupported)
    rule = (min_size, max_pixels if max_pixels is not None else max_image_pixels())
    for image_path in listing.images:
        cached = cache.get(image_path, rule)
        if cached is None:
            between()
        problem, size = cached if cached is not None else inspect_image(
            image_path, min_size=min_size, max_pixels=max_pixels)
        if cached is None:
            cache.put(image_path, rule, (problem, size))
        if problem is None:
            problem = _add_item(report, number, subset, listing.caption_for(image_path),
                                image_path, size, fallbacks)
        if problem is not None:
            report.skipped.append(SkippedFile(image_path, problem))
        else:
            report.subsets[number].images += 1


def _add_item(report: DatasetReport, number: int, subset: Subset, caption_path: Path | None,
              image_path: Path, size: tuple[int, int], fallbacks: tuple[str, str]) -> str | None:
    """Add a checked image with its caption; returns a skip reason if the caption is unreadable."""
    item = DatasetItem(image_path=image_path, caption="", caption_path=caption_path,
                       repeats=subset.repeats, subset=number, size=size)
    if caption_path is not None:
        try:
            item.caption, encoding = read_caption_text(caption_path)
        except DatasetError as exc:
            return f"caption unusable: {exc.what} {exc.fix}".strip()
        if encoding != "utf-8":
            report.warnings.append(
                f"{caption_path.name} is not UTF-8: read as Windows-1252 "
                f"(\"{item.caption[:40]}\"). Save it as UTF-8 if the accents look wrong.")
        if not item.caption:
            item.caption_source = EMPTY_CAPTION_FILE
    else:
        report.missing_captions.append(image_path)
        item.caption, item.caption_source = fallback_caption(
            subset.default_caption, subset.kohya_class, *fallbacks)
    report.items.append(item)
    return None


def fallback_caption(folder_default: str, kohya_class: str, default_caption: str,
                     trigger_word: str) -> tuple[str, str]:
    """(caption, source) of an image without a caption file: the first that is set of its
    folder's default caption, its kohya folder's class, the dataset's default caption and the
    trigger word; ("", NO_CAPTION) when none is."""
    for source, text in zip(CAPTION_FALLBACKS, (folder_default, kohya_class, default_caption,
                                                trigger_word)):
        if text.strip():
            return text.strip(), source
    return "", NO_CAPTION


def refresh_caption_warnings(report: DatasetReport, warn_uncaptioned: bool = True) -> None:
    """One warning line per kind of caption that trains empty (none is ever empty silently),
    replacing the lines an earlier call added (after a caption was edited)."""
    report.warnings = [w for w in report.warnings if w not in report.caption_warning_lines]
    report.caption_warning_lines = []
    for source, why, fix in (
            (EMPTY_CAPTION_FILE, "have an empty caption file",
             "write a caption, or delete the file to use the default caption"),
            (NO_CAPTION, "have no caption file and no default caption, kohya folder class "
             "or trigger word", "set a trigger word or default caption, or add .txt files")):
        images = [item.image_path for item in report.items if item.caption_source == source]
        if images and (warn_uncaptioned or source != NO_CAPTION):
            names = ", ".join(p.name for p in images[:3]) + (", ..." if len(images) > 3 else "")
            line = f"{len(images)} image(s) {why} ({names}): they train with an empty " \
                f"caption; {fix}."
            report.warnings.append(line)
            report.caption_warning_lines.append(line)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_folders(report: DatasetReport) -> list[str]:
    """One line per folder: repeats x images = images per epoch, and its fallback caption."""
    lines = []
    def name(s: SubsetSummary) -> str:  # the folder itself by its name, not "."
        return s.path.name if s.path == report.root else _display(s.path, report.root)

    width = max((len(name(s)) for s in report.subsets), default=0)
    for s in report.subsets:
        fallback = s.default_caption or s.kohya_class
        note = f'  (uncaptioned images: "{fallback}")' if fallback else ""
        lines.append(f"    {name(s):<{width}}  {s.repeats:>3} x "
                     f"{_plural(s.images, 'image')} = {s.repeats * s.images} per epoch{note}")
    return lines


def describe_caption_sources(report: DatasetReport) -> str:
    """"12 from caption files, 2 from the kohya folder class, 1 with no caption"."""
    def phrase(source: str) -> str:
        if source == CAPTION_FILE:
            return "from caption files"
        if source in (EMPTY_CAPTION_FILE, NO_CAPTION):
            return f"with {'an ' if source == EMPTY_CAPTION_FILE else ''}{source}"
        return f"from the {source}"
    return ", ".join(f"{n} {phrase(k)}" for k, n in report.caption_sources().items())


def format_report(report: DatasetReport) -> str:
    """The report as text for a person: folders and repeats, counts, caption sources,
    skipped files, warnings, a hint."""
    root = report.root
    kind = {"kohya": "kohya folder", "subsets": "listed folders"}.get(report.layout, "folder")
    lines = [f"Dataset: {root} ({kind})"]
    if len(report.subsets) > 1 or report.layout != "folder" or \
            any(s.repeats != 1 for s in report.subsets):
        lines.append("  Folders (repeats x images):")
        lines.extend(format_folders(report))
    lines += [f"  {_plural(report.usable, 'image')} usable, {report.images_per_epoch} per epoch "
              f"({report.captions_found} with caption files, "
              f"{len(report.missing_captions)} without)",
              f"  {_plural(len(report.skipped), 'file')} skipped"]
    if report.items:
        lines.append(f"  Captions: {describe_caption_sources(report)}")
    if report.skipped:
        lines.append("Skipped:")
        lines.extend(f"  {_display(s.path, root)}: {s.reason}" for s in report.skipped)
    if report.warnings:
        lines.append("Warnings:")
        lines.extend(f"  {w}" for w in report.warnings)
    if report.missing_captions:
        lines.append("Without a caption file (the caption they train with):")
        by_path = {item.image_path: item for item in report.items}
        for path in report.missing_captions:
            item = by_path[path]
            lines.append(f'  {_display(path, root)}: "{item.caption}" ({item.caption_source})')
    if report.ignored:
        names = ", ".join(_display(p, root) + ("/" if p.is_dir() else "") for p in report.ignored)
        lines.append(f"Ignored (not images or captions): {names}")
    lines.append(_hint(report))
    return "\n".join(lines)


def _hint(report: DatasetReport) -> str:
    if report.usable:
        extra = " Fix or remove the skipped files to train on them too." if report.skipped else ""
        return f"Ready to train on {report.usable} image{'s' if report.usable != 1 else ''}.{extra}"
    folders = [p.name for p in report.ignored if p.is_dir()]
    if report.skipped:
        return ("Nothing usable: every image was skipped. Fix or replace the files listed "
                "above, then check again.")
    if folders:
        return (f"Nothing usable: no images directly in this folder. Choose the subfolder that "
                f"holds them (e.g. {folders[0]}), or name the subfolders the kohya way "
                f"(e.g. 10_{folders[0]}: trained 10 times per epoch).")
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    return f"Nothing usable: no images found. Add {_SUPPORTED} images ({exts}) to this folder."
