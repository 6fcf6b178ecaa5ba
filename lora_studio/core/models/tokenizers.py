"""A model's tokenizers, loaded once per process and shared by its pipelines.

Building a CLIP tokenizer (transformers turns vocab.json + merges.txt into its fast tokenizer)
holds Python's GIL for ~60 ms on an idle core and ~300 ms on a busy one: while a job loads a
model, the window cannot paint for that long. So tokenizers are kept here by folder (its path
and its files' sizes and times: an edited folder loads again), handed to diffusers'
`from_pretrained` / `from_single_file` as ready components, and the app loads the chosen base
model's tokenizers in the background before any job needs them (`warmup.prefetch_model`).
A tokenizer is only read by the pipelines (one job at a time), never changed.

The cache is bounded: a CLIP tokenizer holds ~8 MiB, and a long session that tries many models
(or edits a folder: a new key each time) would otherwise keep every one it ever loaded. It keeps
the `_MAX_TOKENIZERS` used last (the base models of the Train and Generate tabs, SDXL's two
each, with room to spare) and drops a folder's old tokenizer when its files changed.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

_MAX_TOKENIZERS = 6
_cache: OrderedDict[tuple, Any] = OrderedDict()  # key -> tokenizer, the one used last at the end
_lock = threading.Lock()
TOKENIZER_PARTS = ("tokenizer", "tokenizer_2")


def _key(folder: Path, class_name: str) -> tuple:
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                   for f in folder.iterdir() if f.is_file())
    return str(folder.resolve()), class_name, tuple(files)


def load_tokenizer(folder: str | Path, class_name: str = "CLIPTokenizer") -> Any:
    """The transformers tokenizer `class_name` saved in `folder` (loaded on first use)."""
    folder = Path(folder)
    key = _key(folder, class_name)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    import transformers

    tokenizer = getattr(transformers, class_name).from_pretrained(str(folder))
    with _lock:
        for stale in [k for k in _cache if k[:2] == key[:2] and k != key]:
            del _cache[stale]  # the same folder before its files changed: never asked for again
        tokenizer = _cache.setdefault(key, tokenizer)
        _cache.move_to_end(key)
        while len(_cache) > _MAX_TOKENIZERS:
            _cache.popitem(last=False)
        return tokenizer


def pipeline_tokenizers(model_folder: str | Path) -> dict[str, Any]:
    """{"tokenizer": ..., "tokenizer_2": ...} of a diffusers folder (or a config folder laid out
    like one), as its model_index.json names them; {} when it names none we can load."""
    model_folder = Path(model_folder)
    try:
        index = json.loads((model_folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found = {}
    for part in TOKENIZER_PARTS:
        entry = index.get(part)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers" \
                and isinstance(entry[1], str) and (model_folder / part).is_dir():
            found[part] = load_tokenizer(model_folder / part, entry[1])
    return found
