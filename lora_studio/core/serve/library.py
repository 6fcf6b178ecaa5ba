"""The served LoRA folder and the pool of LoRAs loaded in the generation session.

`LoraLibrary` lists a folder (recursively) as A1111 does for `/sdapi/v1/loras`: every
`.safetensors` / `.pt` / `.ckpt` file, named by its file stem, with its `ss_output_name` as alias
and its safetensors metadata (values that hold a JSON object decoded, as A1111 does). A prompt's
`<lora:NAME:...>` is found by file stem first, then by alias (case-insensitive, as the session
matches). The folder is read again on each request, headers cached by (size, mtime), so a newly
trained LoRA is usable without a restart.

`AdapterPool.ensure(session, wanted)` is the one place that decides which LoRAs are loaded: a LoRA
is loaded on first use (never the base model again), reloaded only when its file changed, kept
switched off (a request's tags switch on the ones it names, at the tag's weights, for that render
only), and when more than `max_loaded` are loaded the least recently used are unloaded. The pool
owns the session's stack: it hands the session the loaded files, least recently used first, as
`StackEntry(path, 1.0, enabled=False)` through `GenerationSession.set_stack`.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_studio.core.paths import path_key

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")


@dataclass(frozen=True)
class LoraOnDisk:
    name: str  # file stem: the name `<lora:name>` uses
    path: Path
    alias: str  # ss_output_name, else the name (A1111's "Alias from file")
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """A1111's `/sdapi/v1/loras` item."""
        return {"name": self.name, "alias": self.alias, "path": str(self.path),
                "metadata": self.metadata}


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _read_metadata(path: Path) -> dict[str, Any]:
    """The safetensors metadata, JSON-object values decoded; {} for legacy / unreadable files."""
    if path.suffix.lower() != ".safetensors":
        return {}  # reading a pickle's metadata would mean unpickling it
    from lora_studio.core.errors import StudioError
    from lora_studio.core.lora.sft import read_header

    try:
        raw = read_header(path).metadata
    except (StudioError, OSError):
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        out[key] = value
        if isinstance(value, str) and value.startswith("{"):
            try:
                out[key] = json.loads(value)
            except ValueError:
                pass
    return out


class LoraLibrary:
    """The LoRA files under one folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()
        self._cache: dict[Path, tuple[tuple[int, int], LoraOnDisk]] = {}

    def entries(self) -> list[LoraOnDisk]:
        """Every LoRA file, sorted by path (re-read from disk; headers cached)."""
        if not self.folder.is_dir():
            return []
        found: list[LoraOnDisk] = []
        for root, dirs, files in os.walk(self.folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(root) / name
                if path.suffix.lower() in LORA_SUFFIXES and not name.startswith("."):
                    entry = self._entry(path)
                    if entry is not None:
                        found.append(entry)
        return found

    def _entry(self, path: Path) -> LoraOnDisk | None:
        try:
            stamp = _stamp(path)
        except OSError:  # removed while listing
            return None
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            metadata = _read_metadata(path)
            alias = str(metadata.get("ss_output_name") or "") or path.stem
            cached = (stamp, LoraOnDisk(path.stem, path, alias, metadata))
            self._cache[path] = cached
        return cached[1]

    def find(self, name: str, entries: list[LoraOnDisk] | None = None) -> LoraOnDisk | None:
        """The LoRA a `<lora:name>` tag means: by file stem (exact case first), then alias."""
        entries = self.entries() if entries is None else entries
        key = name.strip().lower()
        for test in (lambda e: e.name == name.strip(), lambda e: e.name.lower() == key,
                     lambda e: e.alias.lower() == key):
            for entry in entries:
                if test(entry):
                    return entry
        return None


@dataclass
class _Loaded:
    adapter: str  # the session's name for it
    stamp: tuple[int, int]  # the file's (size, mtime) when loaded
    keys: frozenset[str]  # the lower-case names the session finds it by


class AdapterPool:
    """Which LoRA files are loaded in a session, most recently used last (see module doc)."""

    def __init__(self, max_loaded: int = 8) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[Path, _Loaded] = OrderedDict()
        self.loads = 0  # LoRA loads so far (a file loaded again after it changed counts again)

    @property
    def loaded(self) -> list[Path]:
        """The loaded files, least recently used first."""
        return list(self._loaded)

    def ensure(self, session, wanted: dict[str, Path]) -> list[str]:
        """Make the files of `wanted` ({tag name: file}) loaded in `session` and switched off,
        so that the tag names find exactly them; returns their adapter names in `wanted`'s
        order. A wanted file the session refuses raises its StudioError. Call with the session
        free (the server's queue lock held)."""
        from lora_studio.core.generate.stack import StackEntry

        paths = {name: Path(path) for name, path in wanted.items()}
        needed = list(dict.fromkeys(paths.values()))
        stale = [p for p in needed if p in self._loaded and self._loaded[p].stamp != _stamp(p)]
        for name, path in paths.items():  # a loaded LoRA that answers to a wanted tag name
            stale += [other for other, held in self._loaded.items()
                      if other != path and name.lower() in held.keys]
        order = [p for p in self._loaded if p not in needed and p not in stale]
        while order and len(order) + len(needed) > self.max_loaded:
            order.pop(0)  # the least recently used first
        order += needed

        def entries(paths: list[Path]) -> list[StackEntry]:
            return [StackEntry(p, 1.0, enabled=False) for p in paths]

        if stale:  # changed on disk (or shadowing a wanted name): unloaded, then loaded again
            session.set_stack(entries([p for p in self._loaded if p in order and p not in stale]))
        stamps = {p: _stamp(p) for p in order if p not in self._loaded or p in stale}
        report = session.set_stack(entries(order))
        self.loads += len(report.loaded)
        self._loaded = OrderedDict(
            (p, self._held(session, p, report.adapter(p), stamps)) for p in order
            if report.adapter(p) is not None)
        for path in needed:
            if path not in self._loaded:
                raise report.errors[path_key(path)]
        return [self._loaded[path].adapter for path in paths.values()]

    def _held(self, session, path: Path, adapter: str,
              stamps: dict[Path, tuple[int, int]]) -> _Loaded:
        held = self._loaded.get(path)
        if held is not None and path not in stamps:
            return held
        lora = next(lo for lo in session.loras if lo.name == adapter)
        keys = {lora.name.lower(), lora.prompt_name.lower(), (lora.alias or "").lower()} - {""}
        return _Loaded(adapter, stamps[path], frozenset(keys))
