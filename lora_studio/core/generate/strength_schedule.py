"""Per-step LoRA strengths in the syntax of sd-webui-loractl: `<lora:name:1@0,0.2@0.5>`.

loractl (cheald/sd-webui-loractl, `loractl/lib/utils.py`) extends A1111's `<lora:...>` weights:
instead of one number, `weight@step` keyframes separated by `,` or `;` (`~` may stand for
`@`; a keyframe without `@step` sits at step 1). The strength is interpolated linearly between
keyframes (numpy's `interp`) and held at the first / last keyframe's weight outside them.
When the largest step is at most 1, every step is a share of the run; otherwise every step is an
absolute step number. It applies to `te=` / `unet=` (and the positional text-encoder / UNet
weights) alike.

Which step a denoising step is, exactly as loractl computes it inside A1111: its weight is read
from `shared.state.sampling_step`, which A1111's k-diffusion callback sets to `i` after step `i`
is done, so while step k (0-based) runs it reads k - 1 (0 for the first two steps), and a share
is that number over `steps - 2` (loractl's `step_offset=2`), so the last step is at 1.0. Hence
with 4 steps the steps sit at shares 0, 0, 0.5, 1 and `0@0,1@0.5` switches the LoRA fully on
from step 2: what "Starts at 0.5" does. With 2 steps or fewer every step is at share 0 (where
loractl divides by zero).

The prompt is encoded once, before the first step (in A1111 and in diffusers), so a text-encoder
schedule counts with its value at the first step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_ITEMS = re.compile(r"[,;]")
_AT = re.compile(r"[@~]")


def is_schedule(text: str) -> bool:
    """Whether a tag argument is written as keyframes (it has an `@` or `~`)."""
    return bool(_AT.search(text))


def parse_weight(text: str) -> float | StrengthSchedule:
    """A tag weight: a number, or keyframes; ValueError for anything else."""
    return StrengthSchedule.parse(text) if is_schedule(text) else float(text)


def first_weight(value: float | StrengthSchedule) -> float:
    """A number, or the weight a schedule starts with."""
    return value.first if isinstance(value, StrengthSchedule) else float(value)


@dataclass(frozen=True)
class StrengthSchedule:
    """Keyframes (weight, step) sorted by step; see the module docstring."""

    weights: tuple[float, ...]
    steps: tuple[float, ...]
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> StrengthSchedule:
        """`1@0,0.2@0.5` -> keyframes; ValueError when a part is not a number."""
        frames = []
        for item in _ITEMS.split(str(text)):
            parts = [float(p.strip()) for p in _AT.split(item)]
            if len(parts) > 2:
                raise ValueError(f"{item!r} is not weight@step")
            frames.append((parts[0], parts[1] if len(parts) == 2 else 1.0))
        if not all(math.isfinite(v) for frame in frames for v in frame):
            raise ValueError(f"{text!r} holds a number that is not finite")
        frames.sort(key=lambda frame: frame[1])  # a stable sort, as loractl's list.sort
        return cls(tuple(w for w, _ in frames), tuple(s for _, s in frames), str(text).strip())

    @property
    def fractional(self) -> bool:
        """Steps are shares of the run (the largest is at most 1), else step numbers."""
        return self.steps[-1] <= 1.0

    @property
    def first(self) -> float:
        """The weight before the first keyframe: what the run starts with."""
        return self.weights[0]

    def value(self, sampling_step: int, steps: int) -> float:
        """The weight when A1111's step counter reads `sampling_step` of `steps`
        (loractl's `calculate_weight` with `step_offset=2`)."""
        position = float(sampling_step)
        if self.fractional:
            position = position / (steps - 2) if steps > 2 else 0.0
        return _interp(position, self.steps, self.weights)

    def at_step(self, step: int, steps: int) -> float:
        """The weight during denoising step `step` (0-based) of `steps`."""
        return self.value(max(step - 1, 0), steps)


def _interp(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    """numpy.interp for sorted `xs`: linear between points, the end values outside; at a step
    given twice, the later keyframe counts (numpy takes the last point at or below `x`)."""
    if x < xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    j = max(i for i, x0 in enumerate(xs) if x0 <= x)
    if x == xs[j]:
        return ys[j]
    return (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (x - xs[j]) + ys[j]
