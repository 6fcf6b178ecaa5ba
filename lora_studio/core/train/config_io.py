"""Reading and writing `TrainConfig`s: TOML files, dicts, `--set key=value` overrides, typed
values and paths (relative paths resolve as `config.py`'s module doc says)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from lora_studio.core.errors import ConfigError
from lora_studio.core.train.config import (
    PATH_KEYS,
    SECTIONS,
    SUBSET_KEYS,
    TrainConfig,
    _at_least,
)


def _coerce_subsets(value: Any, base: Path) -> list[dict[str, Any]]:
    """`[[dataset.subsets]]` tables: known keys, typed, paths resolved like dataset.path."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError("dataset.subsets", f"must be a list of tables ([[dataset.subsets]] "
                          f"with path = ...), got {value!r}")
    tables = []
    for number, table in enumerate(value, start=1):
        key = f"dataset.subsets[{number}]"
        unknown = sorted(set(table) - set(SUBSET_KEYS))
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", "unknown key",
                              f"Known keys of a subset: {', '.join(SUBSET_KEYS)}.")
        if not isinstance(table.get("path"), str) or not table["path"].strip():
            raise ConfigError(f"{key}.path", "is missing", "Set it to a folder of images.")
        out = {name: table.get(name, default) for name, default in SUBSET_KEYS.items()}
        out["repeats"] = _coerce(f"{key}.repeats", out["repeats"], 1)
        _at_least(f"{key}.repeats", out["repeats"], 1)
        for text_key in ("caption_extension", "default_caption"):
            if out[text_key] is not None:
                out[text_key] = _coerce(f"{key}.{text_key}", out[text_key], "")
        out["path"] = _resolve_path(out["path"], base)
        tables.append({name: v for name, v in out.items() if v is not None})  # TOML has no None
    return tables


# ---------------------------------------------------------------------- typed values
def _field_types(section_cls: type) -> dict[str, Any]:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(section_cls)}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of the field's default, converting int → float."""
    if key == "lora.targets":
        if isinstance(value, (str, list)):
            return value
    elif isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list):
        if isinstance(value, list):
            return value
    kind = "a list" if isinstance(default, list) else type(default).__name__
    if key == "lora.targets":
        kind = "a preset name or a list of module names"
    raise ConfigError(key, f"must be {kind}, got {value!r}")


def _parse_cli_value(key: str, raw: str, default: Any) -> Any:
    """Parse the text of `--set key=value` by the type of the field."""
    text = raw.strip()
    if isinstance(default, str) and not key == "lora.targets":
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text
    if isinstance(default, bool):
        low = text.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise ConfigError(key, f"must be true or false, got {raw!r}")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if isinstance(default, list) or key == "lora.targets":
        if "," in text:  # a,b,c
            return [part.strip() for part in text.split(",") if part.strip()]
        return text if key == "lora.targets" else [text]
    kind = "a number" if isinstance(default, (int, float)) else type(default).__name__
    raise ConfigError(key, f"must be {kind}, got {raw!r}")


def _resolve_path(value: str, base_dir: Path) -> str:
    if not value:
        return value
    if value.startswith("${cwd}"):
        value = str(Path.cwd()) + value[len("${cwd}"):]
    elif value.startswith("${config_dir}"):
        value = str(base_dir) + value[len("${config_dir}"):]
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return str(path.resolve())


# ---------------------------------------------------------------------- dict / TOML / overrides
def config_from_dict(data: dict[str, Any], base_dir: str | Path | None = None,
                     validate: bool = True) -> TrainConfig:
    """Build a config from a TOML-shaped dict; relative paths resolve against `base_dir`
    (default: the current directory). Unknown sections/keys are errors naming them."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    cfg = TrainConfig()
    for section, values in data.items():
        if section == "schema_version":
            cfg.schema_version = _coerce("schema_version", values, 0)
            continue
        if section not in SECTIONS:
            raise ConfigError(section, "unknown section",
                              f"Known sections: {', '.join(SECTIONS)}.")
        if not isinstance(values, dict):
            raise ConfigError(section, f"must be a table ([{section}]), got {values!r}")
        for key, value in values.items():
            _set_value(cfg, section, key, value, base)
    return cfg.validate() if validate else cfg


def _set_value(cfg: TrainConfig, section: str, key: str, value: Any, base: Path) -> None:
    obj = getattr(cfg, section)
    defaults = _field_types(type(obj))
    dotted = f"{section}.{key}"
    if key not in defaults:
        raise ConfigError(dotted, "unknown key",
                          f"Known keys in [{section}]: {', '.join(defaults)}.")
    if dotted == "dataset.subsets":
        setattr(obj, key, _coerce_subsets(value, base))
        return
    value = _coerce(dotted, value, defaults[key])
    if (section, key) in PATH_KEYS:
        value = _resolve_path(value, base)
    setattr(obj, key, value)


def apply_overrides(cfg: TrainConfig, overrides: Sequence[str],
                    base_dir: str | Path | None = None) -> TrainConfig:
    """Apply `section.key=value` strings (typed by the field); relative paths resolve against
    `base_dir` (default: the current directory). Returns the validated config."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(dotted.strip() or item, f"override must look like "
                              f"section.key=value, got {item!r}")
        if section not in SECTIONS:
            raise ConfigError(section, "unknown section",
                              f"Known sections: {', '.join(SECTIONS)}.")
        defaults = _field_types(SECTIONS[section])
        if key not in defaults:
            raise ConfigError(f"{section}.{key}", "unknown key",
                              f"Known keys in [{section}]: {', '.join(defaults)}.")
        _set_value(cfg, section, key, _parse_cli_value(f"{section}.{key}", raw,
                                                        defaults[key]), base)
    return cfg.validate()


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML config (relative paths → its folder), apply `--set` overrides (relative
    paths → the current directory) and validate."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}",
                          "Check the path, or start from resources/presets/quickstart.toml."
                          ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from exc
    cfg = config_from_dict(data, base_dir=path.resolve().parent, validate=not overrides)
    return apply_overrides(cfg, overrides) if overrides else cfg


def config_to_toml(cfg: TrainConfig) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write the config as TOML (atomically) with absolute paths; returns the path."""
    from lora_studio.core.fileio import atomic_write_text

    header = (f"# LoRA Studio training config (schema {cfg.schema_version}).\n"
              f"# Re-run with: lora-studio train {Path(path).name}\n")
    atomic_write_text(path, header + config_to_toml(cfg))
    return Path(path)


def describe_keys() -> dict[str, str]:
    """{"section.key": help text} for every key (the UI's tooltips, `--help` style listings)."""
    out = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out[f"{section}.{f.name}"] = f.metadata.get("help", "")
    return out

