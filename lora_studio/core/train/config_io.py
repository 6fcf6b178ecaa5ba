"""Reading and writing `TrainConfig`s: TOML files, dicts, `--set key=value` overrides, typed
values and paths (relative paths resolve as `config.py`'s module doc says)."""

from __future__ import annotations

import dataclasses
import difflib
import json
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
            raise _unknown_key(key, unknown[0], list(SUBSET_KEYS), "a subset")
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


# ---------------------------------------------------------------------- unknown names
def _unknown_section(section: str) -> ConfigError:
    close = difflib.get_close_matches(section, list(SECTIONS), n=1)
    hint = f"Did you mean [{close[0]}]?" if close else \
        f"Known sections: {', '.join(SECTIONS)}."
    return ConfigError(section, "unknown section", hint)


def _unknown_key(where: str, key: str, known: Sequence[str], what: str) -> ConfigError:
    """`where.key` is not one of `known` (the keys of `what`, e.g. "[train]"): the fix names
    the section that does have it, else the nearest known key, else them all."""
    home = [name for name, cls in SECTIONS.items() if name != where and key in
            {f.name for f in dataclasses.fields(cls)}]
    close = difflib.get_close_matches(key, known, n=1)
    if home:
        hint = f"{key} belongs in [{home[0]}]: move it there ({home[0]}.{key})."
    elif close:
        hint = f"Did you mean {close[0]}?"
    else:
        hint = f"Known keys of {what}: {', '.join(known)}."
    return ConfigError(f"{where}.{key}", "unknown key", hint)


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
    raise ConfigError(key, f"must be {kind}, got {value!r}", _type_fix(key, value, default))


def _type_fix(key: str, value: Any, default: Any) -> str:
    """How to write a value of the field's type, e.g. `learning_rate = 0.0001`."""
    if key == "lora.targets" or not isinstance(default, (bool, int, float, str)):
        return ""
    example = f"{key.rpartition('.')[2]} = {json.dumps(default)}"
    if isinstance(value, str) and not isinstance(default, str):
        return f"Write it without quotes, e.g. {example}."
    return f"Write it like the default: {example}."


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
        raise ConfigError(key, f"must be true or false, got {raw!r}",
                          f"e.g. --set {key}={json.dumps(default)}")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if isinstance(default, list) or key == "lora.targets":
        if "," in text:  # a,b,c
            return [part.strip() for part in text.split(",") if part.strip()]
        return text if key == "lora.targets" else [text]
    kind = "a number" if isinstance(default, (int, float)) else type(default).__name__
    raise ConfigError(key, f"must be {kind}, got {raw!r}",
                      f"e.g. --set {key}={json.dumps(default)}")


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
            raise _unknown_section(section)
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
        raise _unknown_key(section, key, list(defaults), f"[{section}]")
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
                              f"section.key=value, got {item!r}",
                              "e.g. --set train.learning_rate=1e-4")
        if section not in SECTIONS:
            raise _unknown_section(section)
        defaults = _field_types(SECTIONS[section])
        if key not in defaults:
            raise _unknown_key(section, key, list(defaults), f"[{section}]")
        _set_value(cfg, section, key, _parse_cli_value(f"{section}.{key}", raw,
                                                        defaults[key]), base)
    return cfg.validate()


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML config (relative paths → its folder), apply `--set` overrides (relative
    paths → the current directory) and validate."""
    path = Path(path)
    data = read_toml(path)
    cfg = config_from_dict(data, base_dir=path.resolve().parent, validate=not overrides)
    return apply_overrides(cfg, overrides) if overrides else cfg


_START_FROM = "or start from resources/presets/quickstart.toml (or a config the studio saved)."


def read_toml(path: Path, key: str = "config") -> dict[str, Any]:
    """The tables of the TOML file `path` (a UTF-8 BOM is fine). A file that is missing, a
    folder, unreadable, binary, JSON or broken TOML raises ConfigError naming `key`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(key, f"file not found: {path}",
                          f"Check the path, {_START_FROM}") from None
    except IsADirectoryError:
        raise ConfigError(key, f"{path} is a folder, not a config file",
                          f"Give the .toml file in it, {_START_FROM}") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}",
                          "Check that the file exists and that you may read it.") from None
    try:
        text = raw.decode("utf-8-sig")
        if "\0" in text:
            raise ValueError("NUL bytes")
    except ValueError:  # UnicodeDecodeError too
        raise ConfigError(key, f"{path} is not a TOML text file (it holds binary data or "
                          "is not UTF-8 text)",
                          f"Give the training config (.toml) itself, saved as UTF-8, "
                          f"{_START_FROM}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if _is_json(text):
            raise ConfigError(key, f"{path} is not valid TOML: it looks like JSON",
                              "Write it as TOML ([train] on one line, steps = 2 on the next), "
                              f"{_START_FROM}") from None
        raise ConfigError(key, f"{path} is not valid TOML: {exc}",
                          f"Correct it in a text editor where it says, {_START_FROM}") from None


def _is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


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

