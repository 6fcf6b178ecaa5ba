"""Hugging Face hub repo ids ("org/name") resolved from the LOCAL cache only.

LoRA Studio never downloads at load time. A repo id works when the model was downloaded
before (by any tool using huggingface_hub) into the standard cache:
`<cache>/models--org--name/snapshots/<sha>/...` with `refs/main` naming the snapshot.
The cache folder is read from the environment at call time: `HF_HUB_CACHE`, else
`HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from lora_studio.core.errors import ModelLoadError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]$")
_MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def looks_like_repo_id(spec: str) -> bool:
    """"org/name" with hub-legal characters and no file extension of a checkpoint."""
    if not _REPO_ID.match(spec) or ".." in spec:
        return False
    return not spec.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".json"))


def hub_cache_dir() -> Path:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface"
    return base / "hub"


def _not_cached(repo_id: str, cache: Path) -> ModelLoadError:
    return ModelLoadError(
        f"The model {repo_id!r} is not in the local Hugging Face cache ({cache}), and no file or "
        "folder of that name exists.",
        f"Download it once while online (for example `huggingface-cli download {repo_id}`), or "
        "point LoRA Studio to a local diffusers folder or a .safetensors checkpoint instead.",
    )


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The cached snapshot folder of `repo_id` (the `main` ref unless `revision` is given)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=str(cache),
                                   local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        raise _not_cached(repo_id, cache) from exc
    return Path(folder)


def _missing_component_weights(snapshot: Path) -> list[str]:
    """Model components listed in model_index.json whose weights are not in the snapshot
    (diffusers' `from_single_file` caches only the JSON/tokenizer files of a repo)."""
    index = json.loads((snapshot / "model_index.json").read_text(encoding="utf-8"))
    missing = []
    for name in _MODEL_COMPONENTS:
        entry = index.get(name)
        if not isinstance(entry, list) or entry[0] is None:
            continue
        folder = snapshot / name
        if not folder.is_dir() or not any(
            p.name.endswith(_WEIGHT_SUFFIXES) or p.name.endswith(".index.json")
            for p in folder.iterdir()
        ):
            missing.append(name)
    return missing


def resolve_cached_repo(repo_id: str, revision: str | None = None) -> tuple[str, Path]:
    """("diffusers-folder" | "single-file", path) for a cached repo, or a ModelLoadError."""
    snapshot = cached_snapshot(repo_id, revision)
    if (snapshot / "model_index.json").is_file():
        missing = _missing_component_weights(snapshot)
        if missing:
            raise ModelLoadError(
                f"Only part of {repo_id!r} is in the local Hugging Face cache: the weights of "
                f"{', '.join(missing)} are missing (often only the config files were cached).",
                f"Download the whole model once while online (`huggingface-cli download "
                f"{repo_id}`), or point LoRA Studio to a local folder or checkpoint file.",
            )
        return "diffusers-folder", snapshot
    checkpoints = sorted(snapshot.glob("*.safetensors"))
    if len(checkpoints) == 1:
        return "single-file", checkpoints[0]
    raise ModelLoadError(
        f"The cached repo {repo_id!r} ({snapshot}) is not a diffusers model (no model_index.json)"
        + (f" and holds {len(checkpoints)} checkpoint files." if checkpoints else "."),
        "Point LoRA Studio to the checkpoint file you want inside that folder.",
    )


def list_cached_models() -> list[str]:
    """Repo ids in the local hub cache whose `main` snapshot holds a base model: a diffusers
    folder (model_index.json) or a single .safetensors checkpoint. Sorted; reads folders only."""
    cache = hub_cache_dir()
    if not cache.is_dir():
        return []
    found = []
    for repo in cache.glob("models--*--*"):
        ref = repo / "refs" / "main"
        try:
            snapshot = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if (snapshot / "model_index.json").is_file() or \
                len(list(snapshot.glob("*.safetensors"))) == 1:
            found.append(repo.name.removeprefix("models--").replace("--", "/", 1))
    return sorted(found, key=str.lower)
