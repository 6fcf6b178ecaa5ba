"""A model's tokenizers, loaded once per process and shared by its pipelines.

Building a CLIP tokenizer (transformers turns vocab.json + merges.txt into its fast tokenizer)
holds Python's GIL for ~60 ms on an idle core and ~300 ms on a busy one: while a job loads a
model, the window cannot paint for that long. So tokenizers are kept here by folder (its path
and its files' sizes and times: an edited folder loads again), handed to diffusers'
`from_pretrained` / `from_single_file` as ready components, and the app loads the chosen base
model's tokenizers in the background before any job needs them (`warmup.prefetch_model`).
A tokenizer is only read by the pipelines (one job at a time), never changed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

_cache: dict[tuple, Any] = {}
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
            return _cache[key]
    import transformers

    tokenizer = getattr(transformers, class_name).from_pretrained(str(folder))
    with _lock:
        return _cache.setdefault(key, tokenizer)


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
