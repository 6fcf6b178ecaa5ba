"""Per-block LoRA strengths: A1111's "LoRA Block Weight" notation and diffusers' dict form.

The notation is the one AUTOMATIC1111 / Forge users share (hako-mikan's LoRA Block Weight
extension, "LBW"): for SD 1.x, 17 numbers, one per block a standard LoRA trains (REFERENCE §4):

    BASE, IN01, IN02, IN04, IN05, IN07, IN08, MID, OUT03, OUT04, ..., OUT11

BASE is the text encoder. INnn / OUTnn are the UNet's input / output blocks in the original
numbering, where each level of the UNet has one input block per layer plus a down-sampler and
one output block per layer (the last holding the up-sampler). In diffusers names, for SD 1.5:

    IN01 IN02 = down_blocks.0 layers 0, 1     OUT09 OUT10 OUT11 = up_blocks.3 layers 0, 1, 2
    IN04 IN05 = down_blocks.1                 OUT06 OUT07 OUT08 = up_blocks.2
    IN07 IN08 = down_blocks.2                 OUT03 OUT04 OUT05 = up_blocks.1
    MID = mid_block

The blocks the 17 numbers leave out have no attention in SD 1.5, so a standard LoRA has nothing
there: IN00 (conv_in), IN03 / IN06 / IN09 (down-samplers), IN10 IN11 (down_blocks.3), OUT00-02
(up_blocks.0). A LoCon's conv layers there keep the row's plain strength (factor 1), so "ALL"
equals no block weights and a preset changes only what it names. (LBW itself weights them 0.)

Each number is a factor on the row's strength: a module's scale is `strength × its number`.

Other UNets (SD 2.x, SDXL, the tiny models with fewer levels and layers) get the numbers by
depth: a level is matched to SD 1.5's level at the same depth from the outside (a deeper level
takes SD 1.5's deepest numbered one), and layer j of a level takes that level's number j (the
last repeating when the model has more layers; a model with fewer uses the first ones). So on
SDXL the numbers land on IN04-IN08, MID, OUT03-OUT08; LBW's own 12-number SDXL form and the
26-number LyCORIS form are not read yet (a clear error says so).

`BlockWeights` is the value (17 factors); `to_diffusers(strength, layout)` gives diffusers'
`set_adapters` dict form `{"text_encoder": w, "unet": {"down": {"block_0": [..]}, "mid": w,
"up": {...}}}` for the UNet at hand (`UNetLayout.of(unet)`), and `module_factor` the factor of
any UNet module (what the dict form cannot name, see `generate.adapters`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lora_studio.core.errors import StudioError

BLOCK_IDS = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
             "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11")
COUNT = len(BLOCK_IDS)  # 17
# SD 1.5's numbered blocks by depth from the outside (0 = the full-resolution level).
_DOWN_BY_DEPTH = (("IN01", "IN02"), ("IN04", "IN05"), ("IN07", "IN08"))
_UP_BY_DEPTH = (("OUT09", "OUT10", "OUT11"), ("OUT06", "OUT07", "OUT08"),
                ("OUT03", "OUT04", "OUT05"))


def _values(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


# The LBW extension's default presets, by its names (A1111 users type these in prompts).
LBW_PRESETS: dict[str, tuple[float, ...]] = {
    "ALL": _values("1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"),
    "NONE": _values("0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    "INS": _values("1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    "IND": _values("1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    "INALL": _values("1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    "MIDD": _values("1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0"),
    "OUTD": _values("1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0"),
    "OUTS": _values("1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1"),
    "OUTALL": _values("1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"),
    "ALL0.5": _values("0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5"),
}
# Ours. A1111 does not know these names, so tags and PNG info write them as numbers.
STUDIO_PRESETS: dict[str, tuple[float, ...]] = {
    "NO_TE": _values("0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"),
    "STYLE": _values("0,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"),
}
PRESETS = {**LBW_PRESETS, **STUDIO_PRESETS}
PRESET_LABELS = {
    "ALL": "all blocks (the plain strength)",
    "NONE": "nothing (off)",
    "INS": "text encoder + IN01-IN04",
    "IND": "text encoder + IN05-IN08",
    "INALL": "text encoder + all IN blocks",
    "MIDD": "text encoder + IN05-OUT06 (deep)",
    "OUTD": "text encoder + OUT03-OUT06",
    "OUTS": "text encoder + OUT07-OUT11",
    "OUTALL": "text encoder + all OUT blocks",
    "ALL0.5": "every block at half",
    "NO_TE": "no text encoder (UNet only)",
    "STYLE": "style: OUT blocks only, no text encoder",
}
_OTHER_FORMS = {
    12: "12 numbers is LBW's SDXL form, which is not read yet",
    20: "20 numbers is LBW's SDXL LyCORIS form, which is not read yet",
    26: "26 numbers is LBW's LyCORIS form, which is not read yet",
}


def format_factor(value: float) -> str:
    """1.0 → "1", 0.25 → "0.25" (as A1111 writes numbers)."""
    value = float(value)
    if value == int(value):
        return str(int(value))
    return f"{value:.4f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class UNetLayout:
    """Which levels of a UNet hold transformer (attention) blocks, and how many layers each."""

    levels: int
    layers_per_block: int
    down_attention: tuple[int, ...]
    up_attention: tuple[int, ...]
    mid_attention: bool = True

    @classmethod
    def of(cls, unet: Any) -> UNetLayout:
        """The layout of a diffusers UNet2DConditionModel."""
        layers = unet.config.layers_per_block
        if not isinstance(layers, int):  # a per-level list: the numbers follow the first
            layers = int(layers[0])
        return cls(
            levels=len(unet.down_blocks), layers_per_block=int(layers),
            down_attention=tuple(i for i, b in enumerate(unet.down_blocks)
                                 if hasattr(b, "attentions")),
            up_attention=tuple(i for i, b in enumerate(unet.up_blocks)
                               if hasattr(b, "attentions")),
            mid_attention=hasattr(getattr(unet, "mid_block", None), "attentions"),
        )

    def down_ids(self, level: int) -> tuple[str, ...]:
        """The block id of each layer of down level `level` (see the module docstring)."""
        group = _DOWN_BY_DEPTH[min(level, len(_DOWN_BY_DEPTH) - 1)]
        return tuple(group[min(j, len(group) - 1)] for j in range(self.layers_per_block))

    def up_ids(self, level: int) -> tuple[str, ...]:
        depth = self.levels - 1 - level
        group = _UP_BY_DEPTH[min(depth, len(_UP_BY_DEPTH) - 1)]
        return tuple(group[min(j, len(group) - 1)] for j in range(self.layers_per_block + 1))

    def used_ids(self) -> set[str]:
        """The block ids that reach some layer of this UNet (always BASE and MID)."""
        used = {"BASE", "MID"}
        for level in self.down_attention:
            used.update(self.down_ids(level))
        for level in self.up_attention:
            used.update(self.up_ids(level))
        return used


SD15_LAYOUT = UNetLayout(levels=4, layers_per_block=2, down_attention=(0, 1, 2),
                         up_attention=(1, 2, 3))


def _error(what: str) -> StudioError:
    names = ", ".join(PRESETS)
    return StudioError(what, f"Write the 17 numbers BASE, IN01, IN02, IN04, IN05, IN07, IN08, "
                             f"MID, OUT03 … OUT11, separated by commas, or a preset: {names}.")


@dataclass(frozen=True)
class BlockWeights:
    """17 factors on a LoRA's strength, in `BLOCK_IDS` order (see the module docstring)."""

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.values)
        if len(values) != COUNT:
            raise _error(f"LoRA block weights need {COUNT} numbers (BASE, IN01 … OUT11); "
                         f"got {len(values)}.")
        if not all(math.isfinite(v) for v in values):
            raise _error("LoRA block weights must be finite numbers.")
        object.__setattr__(self, "values", values)

    # ------------------------------------------------------------------ making one
    @classmethod
    def parse(cls, text: str) -> BlockWeights:
        """`OUTALL`, `lbw=OUTALL`, `1,0,0,...` (17 numbers) → BlockWeights; else StudioError."""
        raw = str(text).strip()
        if raw.lower().startswith("lbw="):
            raw = raw[4:].strip()
        if not raw:
            raise _error("No LoRA block weights given.")
        preset = next((n for n in PRESETS if n.lower() == raw.lower()), None)
        if preset is not None:
            return cls(PRESETS[preset])
        parts = [p.strip() for p in raw.replace(";", ",").split(",")]
        if len(parts) == 1 and not _is_number(parts[0]):
            raise _error(f"Unknown LoRA block weight preset {raw!r}.")
        if len(parts) in _OTHER_FORMS:
            raise _error(f"{_OTHER_FORMS[len(parts)]}; LoRA Studio reads the {COUNT}-number "
                         "SD 1.x form (it maps onto SDXL's blocks too).")
        bad = [p for p in parts if not _is_number(p)]
        if bad:
            raise _error(f"LoRA block weights: {bad[0]!r} is not a number (random values R / U "
                         "/ X are not supported).")
        if len(parts) != COUNT:
            raise _error(f"LoRA block weights need {COUNT} numbers (BASE, IN01 … OUT11); "
                         f"got {len(parts)}.")
        return cls(tuple(float(p) for p in parts))

    @classmethod
    def preset_named(cls, name: str) -> BlockWeights:
        if name not in PRESETS:
            raise _error(f"Unknown LoRA block weight preset {name!r}.")
        return cls(PRESETS[name])

    @classmethod
    def ones(cls) -> BlockWeights:
        return cls(PRESETS["ALL"])

    def replaced(self, block_id: str, value: float) -> BlockWeights:
        """A copy with one block's factor changed."""
        values = list(self.values)
        values[BLOCK_IDS.index(block_id)] = float(value)
        return BlockWeights(tuple(values))

    # ------------------------------------------------------------------ reading one
    def __getitem__(self, block_id: str) -> float:
        return self.values[BLOCK_IDS.index(block_id)]

    @property
    def text_encoder(self) -> float:
        return self.values[0]

    @property
    def is_identity(self) -> bool:
        """All ones: the same as no block weights."""
        return all(v == 1.0 for v in self.values)

    @property
    def preset(self) -> str | None:
        """The preset with exactly these numbers, if any."""
        return next((n for n, v in PRESETS.items() if v == self.values), None)

    def numbers(self) -> str:
        """The 17 numbers, e.g. "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"."""
        return ",".join(format_factor(v) for v in self.values)

    def notation(self) -> str:
        """What a prompt tag's `lbw=` gets: an LBW preset name A1111 knows, else the numbers."""
        preset = self.preset
        return preset if preset in LBW_PRESETS else self.numbers()

    # ------------------------------------------------------------------ diffusers
    def to_diffusers(self, strength: float, layout: UNetLayout = SD15_LAYOUT,
                     text_encoders: tuple[str, ...] = ("text_encoder",)) -> dict[str, Any]:
        """diffusers' `set_adapters` dict for one adapter at `strength`, for `layout`.

        `text_encoders` names the pipeline parts holding this adapter's text-encoder layers
        (a key for a part the adapter lacks only makes diffusers log a warning)."""
        s = float(strength)
        unet: dict[str, Any] = {
            "down": {f"block_{i}": [s * self[b] for b in layout.down_ids(i)]
                     for i in layout.down_attention},
            "up": {f"block_{i}": [s * self[b] for b in layout.up_ids(i)]
                   for i in layout.up_attention},
        }
        if layout.mid_attention:
            unet["mid"] = s * self["MID"]
        out: dict[str, Any] = {name: s * self.text_encoder for name in text_encoders}
        out["unet"] = unet
        return out

    def part_factor(self, part: str, name: str, layout: UNetLayout | Callable[[], UNetLayout]
                    ) -> float:
        """The factor on a module's strength in pipeline part `part` ("unet", "text_encoder",
        ...): the BASE number in a text encoder, else `module_factor` (`layout` may be a
        callable, asked only for a UNet module)."""
        if part != "unet":
            return self.text_encoder
        return self.module_factor(name, layout() if callable(layout) else layout)

    def module_factor(self, name: str, layout: UNetLayout = SD15_LAYOUT) -> float:
        """The factor of a UNet module (diffusers name, e.g. `up_blocks.1.resnets.2.conv1`)."""
        parts = name.split(".")
        if parts[0] == "mid_block":
            return self["MID"]
        if parts[0] not in ("down_blocks", "up_blocks") or len(parts) < 4 \
                or not parts[1].isdigit():
            return 1.0  # conv_in, conv_out, time embedding: outside the numbered blocks
        level, kind = int(parts[1]), parts[2]
        down = parts[0] == "down_blocks"
        if level not in (layout.down_attention if down else layout.up_attention):
            return 1.0  # a level without attention (SD 1.5: IN10-11, OUT00-02)
        ids = layout.down_ids(level) if down else layout.up_ids(level)
        if kind in ("attentions", "resnets") and parts[3].isdigit():
            return self[ids[min(int(parts[3]), len(ids) - 1)]]
        if kind == "upsamplers":
            return self[ids[-1]]  # it sits in the level's last output block (OUT05, OUT08)
        return 1.0  # down-samplers (IN03, IN06, IN09)


def normalized(weights: BlockWeights | None) -> BlockWeights | None:
    """None for no block weights or all ones (they render the same), else `weights`."""
    return None if weights is None or weights.is_identity else weights


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
