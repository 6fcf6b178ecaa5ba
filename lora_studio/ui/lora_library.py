"""The Mix tab's LoRA library: the files trained here plus any folder or file the user adds.

`LoraLibrary` (GUI thread; widgets only bind to it) keeps an ordered list of `LibraryItem`s, one
per `.safetensors` file. Each file is read in the background with `core.lora.inspect_lora`
(architecture, ranks, alphas, trigger words from the metadata); a file that is not a LoRA
LoRA Studio can use ((IA)³, OFT, a truncated file, not safetensors at all...) stays in the list
marked with the reason, so the user sees why it cannot be stacked, and nothing else is affected.
A1111's card beside a file (`<stem>.json`: activation text, preferred weight, notes...) is read
with it (`core.lora.card.read_card`): `item.card`, and `item.card_note` when (part of) the card
could not be used.

    library.add_files([...]) / add_folder(folder) / remove(path) / rescan()
    library.items -> tuple[LibraryItem, ...]      library.item(path) -> LibraryItem | None
    signals: changed() (items added / removed / read)

The folders and files added are remembered in QSettings (`mix/folders`, `mix/files`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

from lora_studio.core.errors import error_text
from lora_studio.core.paths import path_key
from lora_studio.ui.workers import TaskPool

KEY_FOLDERS = "mix/folders"
KEY_FILES = "mix/files"
LORA_SUFFIX = ".safetensors"
MAX_FOLDER_FILES = 500  # a folder scan stops there (someone pointed at their whole disk)


@dataclass(frozen=True)
class LibraryItem:
    """One LoRA file of the library; `info` is its `LoraInspection` once read, `error` the
    reason it was refused (then `info` is None)."""

    path: Path
    info: Any = None
    error: str | None = None
    card: Any = None  # core.lora.card.LoraCard, or None (no card, or not readable)
    card_note: str | None = None  # what of the card was ignored, and why

    @property
    def activation_text(self) -> str:
        """The card's activation text (A1111 puts it after the LoRA's tag), or ""."""
        return self.card.activation_text if self.card is not None else ""

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def loading(self) -> bool:
        return self.info is None and self.error is None

    @property
    def usable(self) -> bool:
        return self.info is not None

    @property
    def trigger_words(self) -> list[str]:
        """The trigger phrase stored in the file, else the tags in most of its training captions."""
        if self.info is None:
            return []
        phrase = (self.info.metadata.get("modelspec.trigger_phrase") or "").strip()
        if phrase:
            return [p.strip() for p in phrase.split(",") if p.strip()]
        # kohya's tag counts: the trigger word is in (nearly) every caption, a description in few
        tags = self.info.top_tags
        most = tags[0][1] if tags else 0
        return [tag for tag, count in tags if count >= max(2, most / 2)
                and len(tag.split()) <= 4][:3]

    @property
    def arch_label(self) -> str:
        """"SD 1.x", "SDXL", ... as the file states it ("" while it is read or when refused)."""
        if self.info is None:
            return ""
        from lora_studio.core.lora.model import ARCH_LABELS

        return ARCH_LABELS.get(self.info.arch or "", "architecture unknown")

    def summary(self) -> str:
        """One line: "SD 1.x · LoRA · rank 8 · alpha 8 · 64 modules" (or the problem)."""
        if self.error is not None:
            return f"Cannot be used: {self.error}"
        if self.info is None:
            return "Reading…"
        info = self.info
        return (f"{self.arch_label} · {info.kind} · rank {_span(info.ranks)} · "
                f"alpha {_span(info.alphas)} · {info.module_count} modules")


class LoraLibrary(QObject):
    changed = Signal()

    def __init__(self, settings: QSettings | None = None,
                 default_folders: Iterable[str | Path] = (),
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._default_folders = [Path(f) for f in default_folders]  # scanned, never saved
        self._pool = TaskPool(max_threads=1, parent=self)
        self._items: dict[str, LibraryItem] = {}
        self._folders: list[Path] = []
        self._files: list[Path] = []
        if settings is not None:
            self._folders = [Path(p) for p in _string_list(settings.value(KEY_FOLDERS, []))]
            self._files = [Path(p) for p in _string_list(settings.value(KEY_FILES, []))]
            self._add([p for p in self._files if p.is_file()])
        for folder in self._default_folders + self._folders:
            self._add(lora_files_in(folder))

    # ------------------------------------------------------------------ reading
    @property
    def items(self) -> tuple[LibraryItem, ...]:
        return tuple(self._items.values())

    @property
    def folders(self) -> tuple[Path, ...]:
        return tuple(self._folders)

    def item(self, path: str | Path) -> LibraryItem | None:
        return self._items.get(path_key(path))

    # ------------------------------------------------------------------ editing
    def add_files(self, paths: Iterable[str | Path]) -> int:
        """Add LoRA files (other files are ignored); returns how many were new."""
        files = [Path(p) for p in paths if Path(p).suffix.lower() == LORA_SUFFIX]
        added = self._add(files)
        known = {path_key(p) for p in self._files}
        self._files += [p for p in files if path_key(p) not in known]
        self._save()
        return added

    def add_folder(self, folder: str | Path) -> int:
        """Add every LoRA file in `folder` and its subfolders; the folder is rescanned later."""
        folder = Path(folder)
        if path_key(folder) not in {path_key(f) for f in self._folders}:
            self._folders.append(folder)
            self._save()
        return self._add(lora_files_in(folder))

    def add_paths(self, paths: Iterable[str | Path]) -> int:
        """What a drop does: folders are added as folders, files as files."""
        paths = [Path(p) for p in paths]
        count = sum(self.add_folder(p) for p in paths if p.is_dir())
        return count + self.add_files(p for p in paths if p.is_file())

    def remove(self, path: str | Path) -> None:
        key = path_key(path)
        if self._items.pop(key, None) is not None:
            self._files = [p for p in self._files if path_key(p) != key]
            self._save()
            self.changed.emit()

    def rescan(self) -> int:
        """Look in the library's folders again (new files appear; deleted ones go; cards
        edited meanwhile, e.g. in A1111, are read again)."""
        from lora_studio.core.lora.card import read_card

        gone = [k for k, item in self._items.items() if not item.path.is_file()]
        for key in gone:
            del self._items[key]
        edited = 0
        for key, item in list(self._items.items()):
            if item.usable:
                found = read_card(item.path)
                if (found.card, found.note) != (item.card, item.card_note):
                    self._items[key] = replace(item, card=found.card, card_note=found.note)
                    edited += 1
        added = sum(self._add(lora_files_in(folder), emit=False)
                    for folder in self._default_folders + self._folders)
        if gone or added or edited:
            self.changed.emit()
        return added

    def refresh_file(self, path: str | Path) -> None:
        """A file was (re)written here (a training run, an export): add it, or read it again."""
        if not self.add_files([path]):
            self.reread(path)

    def reread(self, path: str | Path) -> None:
        """Read a file again (it was overwritten, e.g. by a new training run)."""
        item = self.item(path)
        if item is not None:
            self._items[path_key(path)] = LibraryItem(item.path)
            self._inspect(item.path)
            self.changed.emit()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until every file being read is read (tests, screenshots)."""
        return self._pool.wait(timeout_ms)

    def shutdown(self) -> None:
        self._pool.shutdown()

    # ------------------------------------------------------------------ internals
    def _add(self, paths: Iterable[Path], emit: bool = True) -> int:
        added = 0
        for path in paths:
            key = path_key(path)
            if key in self._items:
                continue
            self._items[key] = LibraryItem(path)
            self._inspect(path)
            added += 1
        if added and emit:
            self.changed.emit()
        return added

    def _inspect(self, path: Path) -> None:
        key = path_key(path)

        def read() -> Any:
            from lora_studio.core.lora.card import read_card
            from lora_studio.core.lora.inspect import inspect_lora

            return inspect_lora(path), read_card(path)

        def done(result: Any) -> None:
            info, found = result
            if key in self._items:
                self._items[key] = replace(self._items[key], info=info, error=None,
                                           card=found.card, card_note=found.note)
                self.changed.emit()

        def failed(exc: BaseException) -> None:
            if key in self._items:
                self._items[key] = replace(self._items[key], info=None, error=error_text(exc))
                self.changed.emit()

        self._pool.submit(read, done, failed)

    def _save(self) -> None:
        if self._settings is not None:
            self._settings.setValue(KEY_FOLDERS, [str(p) for p in self._folders])
            self._settings.setValue(KEY_FILES, [str(p) for p in self._files])


def lora_files_in(folder: Path) -> list[Path]:
    """The .safetensors files in `folder` and below (checkpoints/ folders of training runs
    skipped: those are resume states, not LoRAs; hidden files and folders too: the studio's
    half-written temp files and staging folders, which a kill can leave), sorted, at most
    MAX_FOLDER_FILES."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob(f"*{LORA_SUFFIX}")):
        parts = path.relative_to(folder).parts
        if "checkpoints" in parts[:-1] or any(part.startswith(".") for part in parts):
            continue
        found.append(path)
        if len(found) >= MAX_FOLDER_FILES:
            break
    return found


def _span(values: list) -> str:
    if not values:
        return "?"
    low, high = (f"{v:g}" if isinstance(v, float) else str(v) for v in (min(values),
                                                                       max(values)))
    return low if low == high else f"{low}–{high}"


def _string_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if str(v).strip()]

