"""A1111's LoRA card: the `<file stem>.json` beside a LoRA file ("user metadata").

AUTOMATIC1111 (and Forge) keep what a person writes about a LoRA in a JSON object beside it,
edited in the extra-networks card editor (`extensions-builtin/Lora/ui_edit_user_metadata.py`):

    {"description": str, "sd version": "SD1" | "SD2" | "SDXL" | "SD3" | "Unknown",
     "activation text": str, "preferred weight": number, "negative text": str, "notes": str}

A1111 adds "activation text" after the `<lora:name:w>` tag when the card is clicked, and uses
"preferred weight" as the tag's weight when it is not 0 (0 means unset: the default multiplier;
its slider runs 0..2). It reads the object, changes its own keys and writes the whole object
back, so keys it does not know survive its edits.

The studio writes a card beside every LoRA it trains or exports (`write_card`,
`save_lora_with_card`) and reads cards back for the Mix tab (`read_card`). Who owns what:
- A new card gets all six keys: "activation text" from the trigger phrase, "sd version" from the
  architecture, the rest empty / 0 (or, for an export of one LoRA to a new file, copied from
  the source's card: its description, notes, preferred weight...).
- The studio owns only "activation text" and "sd version", and records what it last wrote for
  them under "lora studio". Writing again (a re-trained run over the same file) updates one of
  those keys only while it still holds what the studio wrote, or nothing ("" / "Unknown", what
  A1111's editor saves untouched); a value a person typed is kept. Every other key
  ("description", "notes", "negative text", "preferred weight", anything else) is never changed
  once the card exists.
- A card that cannot be read (not JSON, not an object) is left as it is; the write returns a
  note saying so instead of replacing a person's file.

Reading never raises for a bad card: `read_card` returns the card (None when there is none or
it is not a JSON object) and a note naming what was ignored (a key of the wrong type is dropped,
the rest of the card is used).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_studio.core.errors import StudioError
from lora_studio.core.fileio import atomic_write_text

CARD_SUFFIX = ".json"
SD_VERSIONS = ("SD1", "SD2", "SDXL", "SD3", "Unknown")
STUDIO_KEY = "lora studio"  # what the studio last wrote for the keys it owns
OWNED_KEYS = ("activation text", "sd version")
_UNSET = {"activation text": "", "sd version": "Unknown"}
_TEXT_KEYS = ("description", "sd version", "activation text", "negative text", "notes")
_ARCH_VERSIONS = {"sd1": "SD1", "sd2": "SD2", "sd2-v": "SD2", "sdxl": "SDXL"}
MAX_CARD_BYTES = 1 << 20  # a card is a few hundred bytes; a bigger "card" is not one


@dataclass(frozen=True)
class LoraCard:
    """The six keys of an A1111 card, as read (missing keys: empty, "Unknown", 0)."""

    description: str = ""
    sd_version: str = "Unknown"
    activation_text: str = ""
    preferred_weight: float = 0.0  # 0: unset (A1111 then uses its default multiplier)
    negative_text: str = ""
    notes: str = ""

    @property
    def weight(self) -> float | None:
        """The preferred weight, or None when the card leaves it unset (0)."""
        return self.preferred_weight or None


@dataclass(frozen=True)
class CardRead:
    """What `read_card` found: the card (None: no card, or unreadable) and a note saying what
    was ignored (None: nothing)."""

    path: Path
    card: LoraCard | None = None
    note: str | None = None


def card_path(lora_path: str | os.PathLike[str]) -> Path:
    """`style.safetensors` -> `style.json` (A1111: the file name without its extension)."""
    lora_path = Path(lora_path)
    return lora_path.with_name(lora_path.stem + CARD_SUFFIX)


def sd_version_of(arch: str | None) -> str:
    """A1111's "sd version" for one of the studio's architectures ("sd1" -> "SD1")."""
    return _ARCH_VERSIONS.get(str(arch or ""), "Unknown")


# ----------------------------------------------------------------------------- reading
def read_card(lora_path: str | os.PathLike[str]) -> CardRead:
    """The card beside `lora_path` (see the module docstring); never raises for a bad card."""
    path = card_path(lora_path)
    data, note = _load(path)
    if data is None:
        return CardRead(path, None, note)
    values: dict[str, Any] = {}
    bad: list[str] = []
    for key in _TEXT_KEYS:
        if key in data:
            if isinstance(data[key], str):
                values[key] = data[key]
            else:
                bad.append(f'"{key}" is not text')
    if "preferred weight" in data:
        weight = _number(data["preferred weight"])
        if weight is None:
            bad.append('"preferred weight" is not a number')
        else:
            values["preferred weight"] = weight
    card = LoraCard(
        description=values.get("description", ""),
        sd_version=values.get("sd version", "Unknown"),
        activation_text=values.get("activation text", "").strip(),
        preferred_weight=values.get("preferred weight", 0.0),
        negative_text=values.get("negative text", ""),
        notes=values.get("notes", ""),
    )
    note = f"{path.name}: {'; '.join(bad)}; ignored." if bad else None
    return CardRead(path, card, note)


def _number(value: Any) -> float | None:
    """A finite number, or a string of one (A1111 reads the weight with float())."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _load(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the card's JSON object, None), or (None, why not) — (None, None) when there is none."""
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            return None, f"{path.name} is not a LoRA card (over 1 MB); ignored."
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path.name} could not be read ({exc.strerror or exc}); ignored."
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        return None, f"{path.name} is not UTF-8 text; ignored."
    except ValueError as exc:
        return None, f"{path.name} is not valid JSON ({exc}); ignored."
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object (a LoRA card is {{...}}); ignored."
    return data, None


# ----------------------------------------------------------------------------- writing
def write_card(lora_path: str | os.PathLike[str], *, activation_text: str, sd_version: str,
               base: Mapping[str, Any] | None = None) -> str | None:
    """Write or update the card beside `lora_path` (see the module docstring for what is kept).

    `base`: the card to start from when there is none yet (a source LoRA's card, for an export
    of it). Returns None, or a note when an existing card could not be read and was left as it
    is. Written atomically; an unchanged card is not rewritten. Errors writing it (a full disk)
    are raised as for any file the studio writes."""
    path = card_path(lora_path)
    existing, note = _load(path)
    if existing is None and note is not None:
        return f"{note.removesuffix('; ignored.')}; left as it is (no card written)."
    if existing is None:
        data: dict[str, Any] = {"description": "", "sd version": "Unknown",
                                "activation text": "", "preferred weight": 0,
                                "negative text": "", "notes": ""}
        data.update(base or {})
    else:
        data = dict(existing)
    wrote = data.get(STUDIO_KEY)
    ours = dict(wrote) if isinstance(wrote, dict) else {}
    for key, value in (("activation text", activation_text.strip()), ("sd version", sd_version)):
        current = data.get(key, _UNSET[key])
        if current in (_UNSET[key], ours.get(key)):
            data[key] = value
            ours[key] = value
    if ours or STUDIO_KEY in data:
        data[STUDIO_KEY] = ours
    if data != existing:
        atomic_write_text(path, json.dumps(data, indent=4, ensure_ascii=False) + "\n")
    return None


def joined_phrases(texts: Iterable[str | None]) -> str:
    """Comma-separated phrases of `texts`, each once, in order ("a, b" + "b, c" -> "a, b, c")."""
    seen: list[str] = []
    for text in texts:
        for phrase in str(text or "").split(","):
            phrase = phrase.strip()
            if phrase and phrase not in seen:
                seen.append(phrase)
    return ", ".join(seen)


def save_lora_with_card(lora, path: str | os.PathLike[str], *, layout: str = "kohya",
                        dtype: Any = None,
                        sources: Iterable[str | os.PathLike[str]] = ()) -> tuple[Path, str | None]:
    """`formats.write_lora`, then the card beside the new file: (the LoRA path, a note or None).

    `sources`: the LoRA files it was made from. Their cards' activation texts come first, then
    the file's own trigger phrase (`modelspec.trigger_phrase`); the architecture gives the
    "sd version". One source (a convert, a resize) also lends its card to a new card: its
    description, notes, negative text and preferred weight travel with the LoRA."""
    from lora_studio.core.lora.formats import write_lora

    out = write_lora(lora, path, layout=layout, dtype=dtype)
    sources = [Path(s) for s in sources]
    cards = [read_card(s).card for s in sources]
    activation = joined_phrases([c.activation_text for c in cards if c is not None]
                                + [lora.metadata.get("modelspec.trigger_phrase")])
    base = None
    if len(sources) == 1 and sources[0].resolve() != out.resolve():
        base, _ = _load(card_path(sources[0]))
    return out, write_card_safely(out, activation_text=activation,
                                  sd_version=sd_version_of(lora.arch), base=base)


def write_card_safely(lora_path: str | os.PathLike[str], **kwargs: Any) -> str | None:
    """`write_card` after the LoRA itself was saved: a card that cannot be written (a full
    disk, no permission) becomes a note, not an error, since the LoRA is there."""
    try:
        return write_card(lora_path, **kwargs)
    except (StudioError, OSError) as exc:
        return f"The LoRA was saved, but not its card {card_path(lora_path).name}: {exc}"
