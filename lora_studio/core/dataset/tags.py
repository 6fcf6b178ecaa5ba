"""Bulk tag edits on caption files: add, remove, replace, a trigger word, and which lack a tag.

A caption is a comma-separated tag list. Tags are compared stripped and case-insensitively
("Red Hair" is "red hair"); an edited caption is written back joined with ", ", the other tags
in their order (empty tags dropped). Every edit is planned first as a list of `CaptionChange`
(file, old text, new text) that touches nothing: show it, then `apply_changes` writes it (each
file atomically; a rewritten file keeps its mode) and `undo` puts the old bytes back exactly,
deleting the files an edit created. A caption that an edit leaves as it is gets no change, so
it is never rewritten.

- An image without a caption file starts from the caption it trains with now (its folder's
  default, its kohya class, the default caption or the trigger word), so an edit keeps that
  meaning; the new file is created beside the image with its folder's caption extension.
- Caption files are read as `scan.read_caption_text` reads them (lines joined by spaces); one in
  Windows-1252 is written back as UTF-8 (`CaptionChange.converted` says so).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lora_studio.core.dataset.scan import DatasetReport, read_caption_text
from lora_studio.core.errors import DatasetError, DiskFullError
from lora_studio.core.fileio import atomic_write_bytes, atomic_write_text

SEPARATOR = ", "


@dataclass(frozen=True)
class CaptionTarget:
    """An image and its caption file (which may not exist yet)."""

    image_path: Path
    caption_path: Path
    fallback: str = ""  # the caption the image trains with while it has no caption file


@dataclass(frozen=True)
class CaptionChange:
    """One caption file an edit rewrites (or creates, when `old_bytes` is None)."""

    image_path: Path
    path: Path
    old_text: str
    new_text: str
    old_bytes: bytes | None  # the file's exact bytes before the edit; None: the edit creates it
    encoding: str = "utf-8"  # how the old file was read ("cp1252": written back as UTF-8)

    @property
    def created(self) -> bool:
        return self.old_bytes is None

    @property
    def converted(self) -> bool:
        return self.encoding != "utf-8"

    def tag_diff(self) -> tuple[list[str], list[str]]:
        """(tags removed, tags added), compared as tags are (stripped, any case)."""
        old, new = split_tags(self.old_text), split_tags(self.new_text)
        old_keys, new_keys = {_key(t) for t in old}, {_key(t) for t in new}
        return ([t for t in old if _key(t) not in new_keys],
                [t for t in new if _key(t) not in old_keys])


def targets_from_report(report: DatasetReport) -> list[CaptionTarget]:
    """The caption file of every usable image of a checked dataset (existing or to create)."""
    targets = []
    for item in report.items:
        path = item.caption_path
        if path is None:
            extension = report.subsets[item.subset].caption_extension if report.subsets \
                else ".txt"
            path = item.image_path.with_name(item.image_path.stem + extension)
        fallback = item.caption if item.caption_path is None else ""
        targets.append(CaptionTarget(item.image_path, path, fallback))
    return targets


def select(targets: Sequence[CaptionTarget], images: Iterable[str | os.PathLike[str]],
           root: Path | None = None) -> list[CaptionTarget]:
    """The targets of the named images (paths, paths under `root`, or unique file names).

    Raises DatasetError naming an image that is not in the dataset or a name that is ambiguous.
    """
    by_path = {os.path.normcase(os.path.abspath(t.image_path)): t for t in targets}
    chosen: dict[Path, CaptionTarget] = {}
    for image in images:
        target = _find(by_path, targets, Path(image), root)
        chosen[target.image_path] = target
    return [t for t in targets if t.image_path in chosen]


def _find(by_path: dict[str, CaptionTarget], targets: Sequence[CaptionTarget], image: Path,
          root: Path | None) -> CaptionTarget:
    for candidate in (image, (root / image) if root else None):
        if candidate is not None:
            found = by_path.get(os.path.normcase(os.path.abspath(candidate)))
            if found:
                return found
    named = [t for t in targets if t.image_path.name == image.name] if image.name == str(image) \
        else []
    if len(named) == 1:
        return named[0]
    if named:
        where = ", ".join(str(t.image_path) for t in named[:3])
        raise DatasetError(f"{image} names {len(named)} images ({where}).",
                           "Give its folder too, e.g. the path as listed.")
    raise DatasetError(f"{image} is not a usable image of this dataset.",
                       "Name an image the dataset check lists (a path or a file name).")


# ------------------------------------------------------------------ tags of one caption
def split_tags(caption: str) -> list[str]:
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def _key(tag: str) -> str:
    return tag.strip().lower()


def has_tag(caption: str, tag: str) -> bool:
    return _key(tag) in {_key(t) for t in split_tags(caption)}


def check_tag(tag: str, what: str = "tag") -> str:
    """`tag` stripped; refuses an empty one or one holding a comma (that is two tags)."""
    tag = tag.strip()
    if not tag:
        raise DatasetError(f"The {what} is empty.", "Give the tag to edit, e.g. \"red hair\".")
    if "," in tag:
        raise DatasetError(f"The {what} {tag!r} holds a comma, so it is more than one tag.",
                           "Give one tag at a time (tags are separated by commas).")
    return tag


# ------------------------------------------------------------------ planning
def _current(target: CaptionTarget) -> tuple[str, bytes | None, str]:
    """(text, exact bytes or None when there is no file, encoding) of a target's caption."""
    try:
        data = target.caption_path.read_bytes()
    except FileNotFoundError:
        return target.fallback, None, "utf-8"
    except OSError as exc:
        raise DatasetError(f"Cannot read caption file {target.caption_path}: "
                           f"{exc.strerror or exc}",
                           "Check that the file exists and that you may read it.") from exc
    text, encoding = read_caption_text(target.caption_path)
    return text, data, encoding


def plan_edit(targets: Sequence[CaptionTarget],
              edit: Callable[[list[str]], list[str]]) -> list[CaptionChange]:
    """The changes `edit` (old tags -> new tags) makes to each caption; none where the tags
    stay the same (spacing alone is never a reason to rewrite a file)."""
    changes = []
    for target in targets:
        text, data, encoding = _current(target)
        tags = split_tags(text)
        new_tags = edit(list(tags))
        if new_tags != tags:
            changes.append(CaptionChange(target.image_path, target.caption_path, text,
                                         SEPARATOR.join(new_tags), data, encoding))
    return changes


def add_tag(targets: Sequence[CaptionTarget], tag: str, *,
            where_missing: bool = False) -> list[CaptionChange]:
    """Append `tag` to every caption. Where a caption already has it, that is an error
    naming those images unless `where_missing` (then those captions are left as they are)."""
    tag = check_tag(tag)
    if not where_missing:
        having = [t for t in targets if has_tag(_current(t)[0], tag)]
        if having:
            names = ", ".join(t.image_path.name for t in having[:3])
            more = ", ..." if len(having) > 3 else ""
            raise DatasetError(
                f"{len(having)} of the {len(targets)} captions already have {tag!r} "
                f"({names}{more}).",
                "Add it with --where-missing to add it only where it is missing.")
    return plan_edit(targets, lambda tags: tags if _key(tag) in map(_key, tags)
                     else tags + [tag])


def remove_tag(targets: Sequence[CaptionTarget], tag: str) -> list[CaptionChange]:
    """Remove every copy of `tag`."""
    key = _key(check_tag(tag))
    return plan_edit(targets, lambda tags: [t for t in tags if _key(t) != key])


def replace_tag(targets: Sequence[CaptionTarget], old: str, new: str) -> list[CaptionChange]:
    """Put `new` where `old` is; a caption that then holds `new` twice keeps the first."""
    old_key, new = _key(check_tag(old, "tag to replace")), check_tag(new, "new tag")

    def edit(tags: list[str]) -> list[str]:
        if old_key not in map(_key, tags):
            return tags
        out: list[str] = []
        for tag in (new if _key(t) == old_key else t for t in tags):
            if _key(tag) not in map(_key, out):
                out.append(tag)
        return out
    return plan_edit(targets, edit)


def add_trigger(targets: Sequence[CaptionTarget], word: str) -> list[CaptionChange]:
    """Put the trigger `word` first in every caption that does not have it anywhere."""
    word = check_tag(word, "trigger word")
    return plan_edit(targets, lambda tags: tags if _key(word) in map(_key, tags)
                     else [word] + tags)


def missing_tag(targets: Sequence[CaptionTarget], tag: str) -> list[CaptionTarget]:
    """The targets whose caption lacks `tag`."""
    tag = check_tag(tag)
    return [t for t in targets if not has_tag(_current(t)[0], tag)]


# ------------------------------------------------------------------ writing
def _line_end(data: bytes | None) -> str:
    if data and data.endswith(b"\r\n"):
        return "\r\n"
    return "\n" if data and data.endswith(b"\n") else ""


def apply_changes(changes: Sequence[CaptionChange]) -> None:
    """Write every change (UTF-8, each file atomically; a file keeps its line ending and
    mode). Raises DatasetError naming the file if one cannot be written; the files written
    before it stay written (undo the same list to restore them)."""
    for change in changes:
        _write(change.path, lambda c=change: atomic_write_text(
            c.path, c.new_text + _line_end(c.old_bytes)))


def undo(changes: Sequence[CaptionChange]) -> None:
    """Put back what `apply_changes` replaced: the old bytes exactly; a created file is
    deleted."""
    for change in reversed(changes):
        if change.old_bytes is None:
            _write(change.path, lambda c=change: c.path.unlink(missing_ok=True))
        else:
            _write(change.path, lambda c=change: atomic_write_bytes(c.path, c.old_bytes))


def _write(path: Path, action: Callable[[], None]) -> None:
    try:
        action()
    except DiskFullError:
        raise  # already says which disk, how much is free and what to do
    except OSError as exc:
        raise DatasetError(f"Cannot write caption file {path}: {exc.strerror or exc}",
                           "Check that the folder is writable and the disk not full.") from exc
