"""A1111-compatible generation parameters: the PNG `parameters` text chunk ("PNG Info").

The text is what AUTOMATIC1111 writes and reads (Forge, ComfyUI loaders and civitai read it too):

    a cat in a hat, <lora:style:0.8>
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768,
    Model hash: 6ce0161689, Model: v1-5-pruned, Lora hashes: "style: 3a5b6c7d8e9f", Version: ...

(the last line is one line). A1111 keeps `<lora:name:weight>` tags in the prompt, so they are
appended to line 1 for every LoRA used that the prompt does not already name; a LoRA used with
block weights gets them in its tag as the LoRA Block Weight extension spells them
(`<lora:name:0.8:lbw=OUTALL>`, or `lbw=` and 17 numbers). Values holding
`,` `:` or a newline are JSON-quoted, as A1111's `quote()` does; "Schedule type" is left out
when it is "Automatic", as A1111 does.

Hashes:
- "Model hash": A1111's is the first 10 hex digits of the sha256 of the checkpoint file. For a
  single-file checkpoint we hash that file, so the hash matches A1111's. For a diffusers folder
  (which A1111 cannot load anyway) we hash the UNet weights file (`unet/diffusion_pytorch_model
  [.fp16].safetensors`, else `.bin`): it identifies the model's weights, is stable across
  copies of the folder, and is documented here as our choice. Results are cached per process by
  (path, size, mtime).
- "Lora hashes": A1111's LoRA short hash (12 hex), from `lora.hashing.short_hash`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from lora_studio.core.fileio import atomic_write_with
from lora_studio.core.generate.strength_schedule import (
    StrengthSchedule,
    first_weight,
    is_schedule,
    parse_weight,
)

PARAMETERS_KEY = "parameters"

# ------------------------------------------------------------------ prompt <lora:...> tags
_TAG = r"<lora:([^:>]+)((?::[^:>]*)*)>"
_LORA_TAG = re.compile(_TAG, re.IGNORECASE)
_ANY_TAG = r"<lora:[^>]*>"
# Removing a tag also removes the comma that only separated it from its neighbours.
_TIDY = (
    (re.compile(r"[ \t]*,[ \t]*" + _ANY_TAG + r"(?=[ \t]*(?:,|\n|$))", re.I), ""),  # "a, <t>, b"
    (re.compile(r"^([ \t]*)" + _ANY_TAG + r"[ \t]*,?", re.I | re.M), r"\1"),  # "<t>, a"
    (re.compile(r"[ \t]*" + _ANY_TAG, re.I), ""),  # "a <t> b"
)


class PromptLora(tuple):
    """A `<lora:name:weight>` tag: unpacks as `(name, weight)`; `te_weight` holds the text
    encoder weight when the tag gave one (`<lora:name:te:unet>` or `te=`), else None; `lbw`
    the block weights as written (`lbw=OUTALL` / `lbw=1,0,...`, or LBW's older positional
    `<lora:name:1:OUTALL>`), else None. `lbw` is not checked here: the session reads it.
    A weight written as sd-webui-loractl keyframes (`1@0,0.2@0.5`) is a `StrengthSchedule` in
    `schedule` (UNet) / `te_schedule` (text encoder, when given apart from the UNet's), and
    `weight` / `te_weight` hold its first weight."""

    def __new__(cls, name: str, weight: float, te_weight: float | None = None,
                lbw: str | None = None, schedule: StrengthSchedule | None = None,
                te_schedule: StrengthSchedule | None = None):
        obj = super().__new__(cls, (name, weight))
        obj.te_weight = te_weight
        obj.lbw = lbw
        obj.schedule = schedule
        obj.te_schedule = te_schedule
        return obj

    @property
    def name(self) -> str:
        return self[0]

    @property
    def weight(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        te = f", te_weight={self.te_weight}" if self.te_weight is not None else ""
        lbw = f", lbw={self.lbw!r}" if self.lbw is not None else ""
        sched = "".join(f", {k}={v.text!r}" for k, v in (("schedule", self.schedule),
                                                           ("te_schedule", self.te_schedule))
                        if v is not None)
        return f"PromptLora({self.name!r}, {self.weight}{te}{lbw}{sched})"


def _parse_tag_args(args: list[str]) -> tuple[float, float | None, str | None,
                                                StrengthSchedule | None,
                                                StrengthSchedule | None]:
    """A1111's tag arguments: positional te, unet (unet defaults to te) or named te=/unet=,
    each a number or loractl keyframes; block weights as `lbw=` or, in LBW's older syntax, a
    positional preset name / number list. Returns (unet weight, te weight or None, lbw, unet
    schedule or None, te schedule or None when the text encoder has no schedule of its own)."""
    positional: list[float | StrengthSchedule] = []
    named: dict[str, float | StrengthSchedule] = {}
    lbw: str | None = None
    for arg in args:
        arg = arg.strip()
        if not arg:
            continue
        key, eq, value = arg.partition("=")
        if eq and key.strip().lower() == "lbw":
            lbw = value.strip()
            continue
        try:
            if eq:
                named[key.strip().lower()] = parse_weight(value.strip())
            else:
                positional.append(parse_weight(arg))
        except ValueError:
            if not eq and lbw is None and not is_schedule(arg) and (
                    "," in arg or arg.upper() in _preset_names()):
                lbw = arg
            continue  # e.g. `dyn=` or junk: ignored, as A1111 does for what it cannot parse
    te = named.get("te", positional[0] if positional else 1.0)
    unet = named.get("unet", positional[1] if len(positional) > 1 else te)
    apart = "te" in named or len(positional) > 1 or "unet" in named
    schedule = unet if isinstance(unet, StrengthSchedule) else None
    te_schedule = te if apart and isinstance(te, StrengthSchedule) else None
    return first_weight(unet), (first_weight(te) if apart else None), lbw, schedule, te_schedule


def _preset_names() -> set[str]:
    from lora_studio.core.lora.block_weights import PRESETS

    return {name.upper() for name in PRESETS}


def parse_prompt_loras(prompt: str) -> tuple[str, list[PromptLora]]:
    """Split `<lora:name:w>` tags out of a prompt: `(clean_prompt, [(name, weight), ...])`.

    `<lora:name>` means weight 1. `<lora:name:te:unet>` gives the UNet weight as `weight` and
    records the text encoder weight in `.te_weight`; loractl keyframes (`<lora:name:1@0,0@1>`)
    are in `.schedule` / `.te_schedule` (see `PromptLora`).
    The clean prompt is what the text encoder sees: tags removed, dangling commas tidied.
    """
    found: list[PromptLora] = []
    for match in _LORA_TAG.finditer(prompt):
        found.append(PromptLora(match.group(1).strip(),
                                *_parse_tag_args(match.group(2).split(":")[1:])))
    clean = prompt
    for pattern, replacement in _TIDY:
        clean = pattern.sub(replacement, clean)
    lines = [re.sub(r"[ \t]{2,}", " ", line).strip() for line in clean.split("\n")]
    return "\n".join(lines).strip(), found


def lora_tag(name: str, weight: float, lbw: str | None = None) -> str:
    """`<lora:name:weight>`, or `<lora:name:weight:lbw=...>` with block weights (A1111 + LBW)."""
    return f"<lora:{name}:{format_number(weight)}" + (f":lbw={lbw}>" if lbw else ">")


# ------------------------------------------------------------------ formatting
def _quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def format_number(value: float) -> str:
    """7.0 → "7", 0.75 → "0.75" (A1111 shows whole numbers without a decimal point)."""
    value = float(value)
    if value == int(value):
        return str(int(value))
    return f"{value:.4f}".rstrip("0").rstrip(".")


def format_parameters(
    prompt: str,
    negative: str,
    steps: int,
    sampler: str,
    schedule_type: str | None,
    cfg: float,
    seed: int,
    width: int,
    height: int,
    model_name: str | None,
    model_hash: str | None,
    loras: Sequence[tuple[Any, ...]] = (),
    version: str | None = None,
    lora_starts: Sequence[tuple[str, float]] = (),
) -> str:
    """The A1111 `parameters` text. `loras` holds `(name, weight, short_hash[, lbw])` for each
    LoRA used; their `<lora:name:weight[:lbw=...]>` tags are appended to the prompt when it
    does not name them. `lora_starts`: (name, share of the steps) of LoRAs that came in late,
    as a `Lora starts` field (A1111 keeps fields it does not know as they are)."""
    named = {tag.name.lower() for tag in parse_prompt_loras(prompt)[1]}
    missing = [lora_tag(name, w, *rest[1:2]) for name, w, *rest in loras
               if name.lower() not in named]
    line1 = prompt.strip()
    if missing:
        line1 = ", ".join(part for part in (line1, ", ".join(missing)) if part)
    fields: list[tuple[str, Any]] = [
        ("Steps", int(steps)),
        ("Sampler", sampler),
        ("Schedule type", None if schedule_type in (None, "", "Automatic") else schedule_type),
        ("CFG scale", format_number(cfg)),
        ("Seed", int(seed)),
        ("Size", f"{int(width)}x{int(height)}"),
        ("Model hash", model_hash or None),
        ("Model", model_name or None),
    ]
    hashes = [f"{name}: {h}" for name, _, h, *_ in loras if h]
    fields.append(("Lora hashes", ", ".join(hashes) if hashes else None))
    starts = [f"{name}: {format_number(start)}" for name, start in lora_starts if start]
    fields.append(("Lora starts", ", ".join(starts) if starts else None))
    fields.append(("Version", version))
    line3 = ", ".join(f"{k}: {_quote(v)}" for k, v in fields if v is not None)
    text = line1
    if negative and negative.strip():
        text += f"\nNegative prompt: {negative.strip()}"
    return f"{text}\n{line3}".strip()


# ------------------------------------------------------------------ parsing
# A1111's own pattern (modules/infotext_utils.py): `Key: value` or `Key: "json string"`.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _to_int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _to_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _parse_lora_hashes(value: str) -> dict[str, str]:
    out = {}
    for item in value.split(","):
        name, sep, short = item.rpartition(":")
        if sep and name.strip():
            out[name.strip()] = short.strip()
    return out


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse an A1111 `parameters` text (ours or A1111's own) into a dict.

    Keys: prompt (with its `<lora:...>` tags, as A1111 keeps them), negative_prompt, steps,
    sampler, schedule_type (None when absent = Automatic), cfg, seed, width, height, model,
    model_hash, loras (list of {"name", "weight", "te_weight", "lbw", "hash"}: from the tags and
    from "Lora hashes"; weight None for a hash with no tag), version, and `extra`: every other
    `Key: value` as strings (A1111 writes many: Clip skip, Hires upscale, ADetailer ...).
    Missing values are None. Follows A1111's parser: the last line is the settings line when it
    holds at least 3 `Key: value` pairs; everything before "Negative prompt:" is the prompt.
    """
    *lines, last = text.strip().replace("\r\n", "\n").split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    raw: dict[str, str] = {}
    for key, value in _PARAM.findall(last):
        raw[key.strip()] = _unquote(value.strip())

    prompt = "\n".join(prompt_lines).strip()
    size = _SIZE.match(raw.pop("Size", ""))
    hashes = _parse_lora_hashes(raw.pop("Lora hashes", ""))
    loras: list[dict[str, Any]] = []
    for tag in parse_prompt_loras(prompt)[1]:
        loras.append({"name": tag.name, "weight": tag.weight, "te_weight": tag.te_weight,
                      "lbw": tag.lbw, "hash": hashes.get(tag.name)})
    tagged = {entry["name"] for entry in loras}
    for name, short in hashes.items():
        if name not in tagged:
            loras.append({"name": name, "weight": None, "te_weight": None, "lbw": None,
                          "hash": short})
    return {
        "prompt": prompt,
        "negative_prompt": "\n".join(negative_lines).strip(),
        "steps": _to_int(raw.pop("Steps", None)),
        "sampler": raw.pop("Sampler", None),
        "schedule_type": raw.pop("Schedule type", None),
        "cfg": _to_float(raw.pop("CFG scale", None)),
        "seed": _to_int(raw.pop("Seed", None)),
        "width": int(size.group(1)) if size else None,
        "height": int(size.group(2)) if size else None,
        "model": raw.pop("Model", None),
        "model_hash": raw.pop("Model hash", None),
        "loras": loras,
        "version": raw.pop("Version", None),
        "extra": raw,
    }


# ------------------------------------------------------------------ PNG files
def save_png_with_parameters(image, path: str | os.PathLike[str], parameters: str) -> Path:
    """Save a PIL image as PNG with the `parameters` text chunk, atomically. Returns the path.

    Pillow writes a tEXt chunk, or an iTXt (UTF-8) one when the text is not Latin-1."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    path = Path(path)
    atomic_write_with(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
    return path


def read_png_parameters(path: str | os.PathLike[str]) -> str | None:
    """The `parameters` text of an image, or None when it has none.

    PNG: the `parameters` text chunk. JPEG / WebP: A1111 stores the same text in the EXIF
    UserComment (piexif's "UNICODE" form: an 8-byte prefix, then UTF-16-BE), read here too."""
    from PIL import Image

    with Image.open(path) as image:
        text = getattr(image, "text", None) or {}
        value = text.get(PARAMETERS_KEY) or image.info.get(PARAMETERS_KEY)
        if not isinstance(value, str):
            value = _exif_user_comment(image)
    return value if isinstance(value, str) and value else None


def _exif_user_comment(image) -> str | None:
    raw = image.getexif().get_ifd(0x8769).get(0x9286)  # Exif IFD → UserComment
    if raw is None or isinstance(raw, str):
        return raw
    prefix, body = bytes(raw[:8]), bytes(raw[8:])
    if prefix == b"UNICODE\0":
        text = body.decode("utf_16_be", errors="replace")
    elif prefix == b"ASCII\0\0\0":
        text = body.decode("ascii", errors="replace")
    else:
        text = body.decode("utf-8", errors="replace")
    return text.rstrip("\0") or None


def next_image_path(out_dir: Path, seed: int) -> Path:
    """`<out>/<NNNNN>-<seed>.png`, numbered after the highest existing `NNNNN-` file (A1111)."""
    numbers = [int(m.group(1)) for p in out_dir.glob("*.png")
               if (m := re.match(r"^(\d+)-", p.name))]
    return out_dir / f"{(max(numbers) + 1 if numbers else 0):05d}-{seed}.png"


# ------------------------------------------------------------------ model hash
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_UNET_WEIGHTS = (
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_weights_file(path: str | os.PathLike[str]) -> Path | None:
    """The file whose hash names a model: the checkpoint itself, or a diffusers folder's UNet."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for rel in _UNET_WEIGHTS:
            if (path / rel).is_file():
                return path / rel
    return None


def model_hash(path: str | os.PathLike[str]) -> str | None:
    """A1111's "Model hash" (10 hex digits of sha256) for a checkpoint file or diffusers folder;
    None when there is no weights file to hash (see the module docstring)."""
    weights = model_weights_file(path)
    if weights is None:
        return None
    stat = weights.stat()
    key = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = _sha256_file(weights)[:10]
    return _HASH_CACHE[key]

