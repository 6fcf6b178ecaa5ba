"""Checking a dataset folder before training: every image decoded once, every problem reported.

One bad file never stops training: it is skipped, and the report says which file and why (empty,
not an image, truncated, too small, too large). Images are fully decoded here, so a truncated
file is caught now and not halfway through a training run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lora_studio.core.dataset.scan import (
    IMAGE_EXTENSIONS,
    DatasetItem,
    DatasetReport,
    FolderListing,
    SkippedFile,
    list_dataset_files,
    read_caption,
    repeats_for,
    tag_frequency,
)
from lora_studio.core.dataset.transforms import decode_rgb, max_image_pixels
from lora_studio.core.errors import DatasetError

__all__ = ["check_dataset", "check_image", "format_report", "tag_frequency"]

_SUPPORTED = "PNG, JPEG, WebP or BMP"


def check_image(path: Path, *, min_size: int = 64, max_pixels: int | None = None) -> str | None:
    """Why `path` cannot be trained on, or None when it is a usable image.

    The size is read from the header first, so a decompression bomb is never decoded.
    """
    limit = max_pixels if max_pixels is not None else max_image_pixels()
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        return (f"too large: over {limit:,} pixels, Pillow's safety limit against "
                "decompression bombs; downscale it")
    except UnidentifiedImageError:
        return f"not an image: its content is not {_SUPPORTED} data, whatever its name says"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except Exception as exc:  # a malformed header can raise almost anything inside Pillow
        return f"corrupt image header: {exc}"
    with img:
        width, height = img.size
        if width * height > limit:
            return (f"too large: {width}x{height} is {width * height:,} pixels, over the "
                    f"{limit:,}-pixel safety limit against decompression bombs; downscale it")
        if width < min_size or height < min_size:
            return (f"too small: {width}x{height} px, needs at least {min_size} px on each "
                    "side")
        if img.format == "JPEG" and min_size > 0:
            # Decode at a reduced scale: faster, and every byte of the file is still read.
            img.draft(img.mode, (min_size, min_size))
        try:
            decode_rgb(img)
        except Exception as exc:  # every decoder failure means the same to a person: re-export
            return f"truncated or corrupt image data ({exc}); re-export it or remove it"
    return None


def check_dataset(root: str | os.PathLike[str], *, caption_extension: str = ".txt",
                  default_caption: str = "", min_size: int = 64, recursive: bool = False,
                  max_pixels: int | None = None) -> DatasetReport:
    """Scan `root` and decode every image: what is usable, what is skipped and why.

    Images without a caption file (or with an empty one) get `default_caption` and are listed
    in `missing_captions`. Raises DatasetError only when `root` is not a readable folder.
    """
    root_path = _existing_folder(root)
    listing = list_dataset_files(root_path, caption_extension, recursive=recursive)
    default = default_caption.strip()
    report = DatasetReport(root=root_path, items=[], skipped=[], missing_captions=[],
                           ignored=listing.ignored, default_caption=default)
    report.skipped.extend(
        SkippedFile(path, f"unsupported format {path.suffix.lower()}: save it as {_SUPPORTED}")
        for path in listing.unsupported)
    for image_path in listing.images:
        problem = check_image(image_path, min_size=min_size, max_pixels=max_pixels)
        if problem is None:
            problem = _add_item(report, listing, image_path, default)
        if problem is not None:
            report.skipped.append(SkippedFile(image_path, problem))
    report.skipped.sort(key=lambda s: (str(s.path).lower(), str(s.path)))
    return report


def _add_item(report: DatasetReport, listing: FolderListing, image_path: Path,
              default_caption: str) -> str | None:
    """Add a checked image with its caption; returns a skip reason if the caption is unreadable."""
    caption_path = listing.caption_for(image_path)
    caption = ""
    if caption_path is not None:
        try:
            caption = read_caption(caption_path)
        except DatasetError as exc:
            return f"caption unusable: {exc.what} {exc.fix}".strip()
    if not caption:
        caption, caption_path = default_caption, None
        report.missing_captions.append(image_path)
    report.items.append(DatasetItem(image_path=image_path, caption=caption,
                                     caption_path=caption_path,
                                     repeats=repeats_for(image_path, report.root)))
    return None


def _existing_folder(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"Dataset folder {path} does not exist.",
                           "Check the path, or choose the folder that holds your images.")
    if not path.is_dir():
        raise DatasetError(f"{path} is a file, not a folder.",
                           "Choose the folder that holds your images and caption files.")
    try:
        next(os.scandir(path), None)
    except OSError as exc:
        raise DatasetError(f"Cannot open dataset folder {path}: {exc.strerror or exc}",
                           "Check that you may read the folder.") from exc
    return path.resolve()


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def format_report(report: DatasetReport) -> str:
    """The report as text for a person: counts, skipped files, missing captions, a hint."""
    root = report.root
    lines = [f"Dataset: {root}",
             f"  {report.usable} image{'s' if report.usable != 1 else ''} usable "
             f"({report.captions_found} with captions, {len(report.missing_captions)} without)",
             f"  {len(report.skipped)} file{'s' if len(report.skipped) != 1 else ''} skipped"]
    if report.skipped:
        lines.append("Skipped:")
        lines.extend(f"  {_display(s.path, root)}: {s.reason}" for s in report.skipped)
    if report.missing_captions:
        if report.default_caption:
            lines.append(f'Missing captions (these use the default "{report.default_caption}"):')
        else:
            lines.append("Missing captions (no default caption or trigger word set: these train "
                         "with an empty caption):")
        lines.extend(f"  {_display(p, root)}" for p in report.missing_captions)
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
                f"holds them (e.g. {folders[0]}) or scan subfolders too.")
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    return f"Nothing usable: no images found. Add {_SUPPORTED} images ({exts}) to this folder."
