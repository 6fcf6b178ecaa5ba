"""Which folders a dataset is made of, and how often each trains per epoch.

A dataset is one or more *subsets*: folders of images, each with its repeats per epoch, caption
extension and default caption. They come from one of three places:

* a plain folder of images: one subset;
* a kohya folder (sd-scripts' `train_data_dir`): its `N_name` subfolders are the subsets, each
  trained N times per epoch, `name` being the caption of its images without a caption file.
  Other subfolders are ignored with a warning, as kohya does; a folder itself named `N_name`
  trains N times;
* `[[dataset.subsets]]` tables in the config (path, repeats, caption_extension,
  default_caption), for folders kept anywhere.

`dataset.repeats` multiplies every subset's repeats (1 by default). An image without a caption
file is captioned, in order, by its subset's default caption, its kohya folder's class, the
dataset's default caption, then the trigger word (`checks.check_dataset` applies the order).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_studio.core.dataset.scan import IMAGE_EXTENSIONS, normalize_caption_extension
from lora_studio.core.errors import DatasetError

# kohya's repeat-folder convention: `10_sks dog/` means "use these images 10 times per epoch".
REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class Subset:
    """One folder of training images and how it trains."""

    path: Path
    repeats: int = 1
    caption_extension: str = ".txt"
    default_caption: str = ""  # its own caption for images without a caption file
    kohya_class: str = ""  # the `name` of a kohya `N_name` folder (the next fallback caption)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class SubsetLayout:
    """The subsets of a dataset and what a person should hear about how they were found."""

    root: Path | None  # the folder given as dataset.path (None for listed subsets)
    subsets: list[Subset]
    warnings: list[str] = field(default_factory=list)
    ignored_folders: list[Path] = field(default_factory=list)
    kind: str = "folder"  # "folder", "kohya" or "subsets"


def existing_folder(path: str | os.PathLike[str], what: str = "Dataset folder") -> Path:
    """`path` resolved, or a DatasetError saying why it is not a readable folder."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DatasetError(f"{what} {folder} does not exist.",
                           "Check the path, or choose the folder that holds your images.")
    if not folder.is_dir():
        raise DatasetError(f"{folder} is a file, not a folder.",
                           "Choose the folder that holds your images and caption files.")
    try:
        next(os.scandir(folder), None)
    except OSError as exc:
        raise DatasetError(f"Cannot open {what.lower()} {folder}: {exc.strerror or exc}",
                           "Check that you may read the folder.") from exc
    return folder.resolve()


def kohya_folder(name: str) -> tuple[int, str] | None:
    """(repeats, class) of a kohya `N_name` folder name, or None for any other name."""
    match = REPEAT_FOLDER.match(name)
    return (max(1, int(match.group(1))), match.group(2).strip()) if match else None


def _visible_children(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")),
                      key=lambda e: (e.name.lower(), e.name))


def _has_images(entries: Sequence[os.DirEntry]) -> bool:
    return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
               for e in entries)


def resolve_subsets(path: str | os.PathLike[str] | None, *, subsets: Sequence[dict[str, Any]] = (),
                    repeats: int = 1, caption_extension: str = ".txt") -> SubsetLayout:
    """The subsets of a dataset: the listed `subsets` tables when given, else those of `path`
    (a plain folder or a kohya folder). Raises DatasetError when a folder cannot be read."""
    ext = normalize_caption_extension(caption_extension)
    if subsets:
        listed = [Subset(existing_folder(t["path"], f"Subset {n} folder"),
                         int(t.get("repeats", 1)) * repeats,
                         normalize_caption_extension(t.get("caption_extension") or ext),
                         str(t.get("default_caption", "")).strip())
                  for n, t in enumerate(subsets, start=1)]
        return SubsetLayout(root=None, subsets=listed, kind="subsets")
    if path is None or str(path) == "":
        raise DatasetError("No dataset folder is set.", "Choose the folder of your images.")
    root = existing_folder(path)
    children = _visible_children(root)
    folders = [e for e in children if e.is_dir()]
    kohya = [e for e in folders if kohya_folder(e.name)]
    own = kohya_folder(root.name)
    top = Subset(root, (own[0] if own else 1) * repeats, ext, "", own[1] if own else "")
    if not kohya:  # a plain folder (its subfolders are not scanned)
        return SubsetLayout(root, [top], ignored_folders=[Path(e.path) for e in folders])
    layout = SubsetLayout(root, [], kind="kohya")
    if _has_images(children):
        layout.subsets.append(top)
        layout.warnings.append(
            f"{root.name} holds images of its own beside kohya N_name folders: they train "
            f"{top.repeats} time(s) per epoch as a folder of their own (kohya ignores them).")
    for entry in kohya:
        n, name = kohya_folder(entry.name)
        layout.subsets.append(Subset(Path(entry.path), n * repeats, ext, "", name))
    for entry in folders:
        if not kohya_folder(entry.name):
            layout.ignored_folders.append(Path(entry.path))
            layout.warnings.append(
                f"Folder {entry.name}/ is not a kohya N_name folder and is not trained: "
                f"rename it (e.g. 1_{entry.name}) to train it once per epoch.")
    return layout
