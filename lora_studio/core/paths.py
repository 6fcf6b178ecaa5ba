"""Where the app keeps things: shipped resources and the user's data folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def path_key(path: str | os.PathLike[str]) -> str:
    """One spelling per file (user folder expanded, links and `..` resolved): the key by which
    the LoRA stack and library tell whether two paths are the same file."""
    return str(Path(path).expanduser().resolve())


def resources_dir() -> Path:
    """The `resources/` folder: beside the package in a checkout, inside it when installed."""
    for candidate in (PACKAGE_DIR / "resources", PACKAGE_DIR.parent / "resources"):
        if (candidate / "configs").is_dir():
            return candidate
    raise FileNotFoundError("LoRA Studio's resources folder is missing; reinstall the package.")


def configs_dir() -> Path:
    return resources_dir() / "configs"


def sample_dataset_dir() -> Path:
    """The first-run tour's dataset (Tiny Shapes stars, `sample_data.write_concept_dataset`)."""
    return resources_dir() / "sample_dataset"


def sample_reg_dir() -> Path:
    """The sample's regularization pictures (`sample_data.write_regularization_set`)."""
    return resources_dir() / "sample_dataset_reg"


def user_data_dir() -> Path:
    """The per-user data folder (`LORA_STUDIO_HOME` overrides it; tests set it)."""
    override = os.environ.get("LORA_STUDIO_HOME")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "lora-studio"
