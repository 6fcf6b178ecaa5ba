"""What an earlier check found about each image, so opening a folder again decodes nothing new.

Checking a folder decodes every image once (a truncated file must be caught before training,
not halfway through it); for 2,000 photos that is most of a minute. The result of each image's
check (why it is unusable, or its upright size) is kept per folder in the user data folder,
keyed by the image's path, byte size, modification time and inode, and by the rule it was
checked under (smallest side, pixel limit). A changed, replaced or touched file is checked
again; a corrupt or foreign cache file is ignored (and rewritten). Nothing else is cached:
captions are read fresh every time (an edit in another editor shows at once).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lora_studio.core.fileio import atomic_write_text
from lora_studio.core.paths import path_key, user_data_dir

CACHE_VERSION = 2  # 2: animated images are skipped

Result = tuple[str | None, tuple[int, int]]  # (why unusable or None, upright (width, height))


def cache_file(folder: Path) -> Path:
    """Where the checks of `folder`'s images are kept."""
    digest = hashlib.sha1(path_key(folder).encode("utf-8")).hexdigest()[:20]
    return user_data_dir() / "cache" / "dataset-checks" / f"{digest}.json"


class ImageCheckCache:
    """The cached checks of one folder's images; `save()` writes it back when it changed."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.path = cache_file(folder)
        self.enabled = enabled
        self.hits = self.misses = 0
        self._entries: dict[str, list] = self._load() if enabled else {}
        self._seen: set[str] = set()  # images of this check: the only ones saved back
        self._changed = False

    def _load(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def _key(stat: os.stat_result, rule: tuple[int, int]) -> list:
        return [stat.st_size, stat.st_mtime_ns, stat.st_ino, rule[0], rule[1]]

    def get(self, image: Path, rule: tuple[int, int]) -> Result | None:
        """The cached result for `image` checked under `rule` (min side, max pixels), or None
        when it was never checked so or has changed since."""
        if not self.enabled:
            return None
        try:
            key = self._key(image.stat(), rule)
        except OSError:
            return None
        self._seen.add(str(image))
        entry = self._entries.get(str(image))
        if not (isinstance(entry, list) and len(entry) == 8 and entry[:5] == key):
            self.misses += 1
            return None
        self.hits += 1
        return entry[5], (int(entry[6]), int(entry[7]))

    def put(self, image: Path, rule: tuple[int, int], result: Result) -> None:
        if not self.enabled:
            return
        try:
            key = self._key(image.stat(), rule)
        except OSError:
            return
        problem, (width, height) = result
        self._seen.add(str(image))
        self._entries[str(image)] = key + [problem, width, height]
        self._changed = True

    def save(self) -> None:
        """Write the cache (atomically) if it changed, keeping only the images of this check
        (a deleted image leaves it); a failure to write is not an error of the check (the next
        open decodes again)."""
        if not self.enabled or not (self._changed or set(self._entries) - self._seen):
            return
        entries = {k: v for k, v in self._entries.items() if k in self._seen}
        try:
            atomic_write_text(self.path, json.dumps({"version": CACHE_VERSION,
                                                     "entries": entries}))
        except OSError:
            pass
        self._changed = False
