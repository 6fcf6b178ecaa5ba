"""kohya's inline sample-prompt options: `a cat --n blurry --w 768 --h 512 --d 7 --l 6 --s 28`.

kohya sd-scripts (`line_to_prompt_dict` in library/train_util.py) reads a preview prompt line
by splitting it on " --": the first piece is the prompt, every other piece is one option, its
name then one space then its value, the value running up to the next " --". The options:

    --n  negative prompt       --w  width            --h  height
    --d  seed                  --l  CFG scale        --s  steps (kohya: 1 to 1000)
    --ss sampler (kohya's names such as euler_a, k_dpm_2, dpmsolver++, or an A1111 name)

Names are case-insensitive, and a later copy of an option wins, as in kohya. Width and height
are rounded down to a multiple of 8, as kohya does (`width - width % 8`). Anything a line does
not give comes from the [sample] section (negative_prompt, seed, cfg, steps, sampler) and the
dataset resolution (width, height).

Where we differ from kohya, on purpose (it ignores what it cannot read; we say so):
- an unknown option, a value that is not a number, a missing value, or " -- " followed by text
  (kohya reads an option there and silently drops the rest of the prompt) raise ConfigError
  naming `sample.prompts`, the option and the prompt. "--" not preceded by a space ("a--b")
  is prompt text, for kohya and for us.
- kohya's options for other model families (--g, --cn, --ctr, --rcfg, --fs) are refused:
  these previews cannot honour them.
- kohya lifts a width or height below 64 to 64; we keep any multiple of 8 from 8 up, so a tiny
  model renders small previews. Steps outside 1-1000 (kohya clamps them) are an error.
- kohya also matches options against the prompt piece itself (a prompt "w 512 cat" would set
  the width); the prompt is only ever text here.
- without --d kohya draws a random seed; here the [sample] seed is used, so previews compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lora_studio.core.errors import ConfigError, StudioError

KEY = "sample.prompts"
MAX_STEPS = 1000  # kohya's clamp of --s
SIZE_MULTIPLE = 8  # kohya rounds --w / --h down to a multiple of this

# kohya's `sample_sampler` names (get_my_scheduler) -> our A1111 names.
KOHYA_SAMPLERS: dict[str, str] = {
    "ddim": "DDIM", "pndm": "PLMS", "lms": "LMS", "k_lms": "LMS", "euler": "Euler",
    "k_euler": "Euler", "euler_a": "Euler a", "k_euler_a": "Euler a",
    "dpmsolver++": "DPM++ 2M", "dpmsingle": "DPM++ SDE", "heun": "Heun", "dpm_2": "DPM2",
    "k_dpm_2": "DPM2", "dpm_2_a": "DPM2 a", "k_dpm_2_a": "DPM2 a",
}

# kohya options for other model families (FLUX, Lumina, ControlNet): refused with a reason.
_UNSUPPORTED = {
    "g": "FLUX's embedded guidance scale", "cn": "a ControlNet image",
    "ctr": "Lumina's CFG truncation ratio", "rcfg": "Lumina's CFG renormalisation",
    "fs": "a flow-matching shift",
}
_FIELDS = {"n": "negative", "w": "width", "h": "height", "d": "seed", "l": "cfg", "s": "steps",
           "ss": "sampler"}


@dataclass(frozen=True)
class SamplePrompt:
    """One preview prompt with every setting it renders with."""

    prompt: str
    negative: str
    width: int
    height: int
    seed: int
    cfg: float
    steps: int
    sampler: str  # an A1111 name ("Euler a", "DPM++ 2M Karras")

    def parameters(self) -> str:
        """The A1111 `parameters` text of this prompt (what a preview PNG carries)."""
        from lora_studio.core.generate.pnginfo import format_parameters
        from lora_studio.core.generate.samplers import resolve_sampler

        resolved = resolve_sampler(self.sampler)
        return format_parameters(self.prompt, self.negative, self.steps, resolved.name,
                                 resolved.schedule_type, self.cfg, self.seed, self.width,
                                 self.height, model_name=None, model_hash=None)


def default_prompt(sample=None, resolution: int = 512) -> SamplePrompt:
    """The settings a prompt without options renders with: the [sample] section's
    (`sample`, a SampleSection; defaults when None) at `resolution` x `resolution`."""
    if sample is None:
        from lora_studio.core.train.config import SampleSection

        sample = SampleSection()
    return SamplePrompt(prompt="", negative=sample.negative_prompt, width=resolution,
                        height=resolution, seed=sample.seed, cfg=float(sample.cfg),
                        steps=sample.steps, sampler=sample.sampler)


def parse_sample_prompt(line: str, sample=None, resolution: int = 512) -> SamplePrompt:
    """Read one kohya prompt line (see the module text); what it does not set comes from
    `sample` (a SampleSection, defaults when None) and `resolution`.

    Raises ConfigError("sample.prompts", ...) naming the option and the prompt.
    """
    base = default_prompt(sample, resolution)
    prompt, *pieces = line.split(" --")
    values: dict[str, object] = {"prompt": prompt.strip()}
    for piece in pieces:
        name, value = _split_option(piece, line)
        values[_FIELDS[name]] = _convert(name, value, line)
    return replace(base, **values)


def sample_prompts(cfg) -> list[SamplePrompt]:
    """Every `sample.prompts` line of a TrainConfig, parsed (the dataset resolution is the
    default size). Raises ConfigError on the first line it cannot read."""
    return [parse_sample_prompt(line, cfg.sample, cfg.dataset.resolution)
            for line in cfg.sample.prompts]


def _error(line: str, what: str, fix: str) -> ConfigError:
    return ConfigError(KEY, f"{what} in prompt {line.strip()!r}", fix)


def _split_option(piece: str, line: str) -> tuple[str, str]:
    """(lower-case option name, value) of the text after one " --"."""
    if not piece or piece[0].isspace():
        raise _error(line, f'" --{piece[:20]}" is not an option',
                     'kohya reads " --" as the start of an option (--n, --w, --h, --d, --l, '
                     '--s, --ss) and drops the rest of the prompt: remove the space before '
                     '"--" or the dashes to keep it as text.')
    name, _, value = piece.partition(" ")
    name, value = name.lower(), value.strip()
    if name in _UNSUPPORTED:
        raise _error(line, f"--{name} ({_UNSUPPORTED[name]}) is not supported",
                     "Remove it: these previews render Stable Diffusion 1.x / 2.x, which "
                     "has no such setting.")
    if name not in _FIELDS:
        raise _error(line, f"unknown option --{name}",
                     "Use kohya's options: --n negative, --w width, --h height, --d seed, "
                     "--l CFG scale, --s steps, --ss sampler.")
    if not value:
        raise _error(line, f"--{name} has no value",
                     f"Write a value after it, e.g. {_EXAMPLES[name]}.")
    return name, value


_EXAMPLES = {"n": "--n blurry", "w": "--w 512", "h": "--h 768", "d": "--d 1234",
             "l": "--l 7.5", "s": "--s 28", "ss": "--ss euler_a"}


def _convert(name: str, value: str, line: str) -> object:
    if name == "n":
        return value
    if name == "ss":
        return _sampler(value, line)
    if name == "l":
        return _cfg_scale(value, line)
    number = _integer(name, value, line)
    if name in ("w", "h"):
        rounded = number - number % SIZE_MULTIPLE
        if rounded < SIZE_MULTIPLE:
            raise _error(line, f"--{name} {value} is below {SIZE_MULTIPLE} pixels",
                         f"Use {SIZE_MULTIPLE} or more (kohya rounds it down to a multiple "
                         f"of {SIZE_MULTIPLE}).")
        return rounded
    if name == "s" and not 1 <= number <= MAX_STEPS:
        raise _error(line, f"--s {value} is outside 1-{MAX_STEPS}",
                     f"Use 1 to {MAX_STEPS} steps (kohya's range).")
    if name == "d" and number >= 2 ** 64:
        raise _error(line, f"--d {value} is too large for a seed",
                     "Use a seed below 2^64 (e.g. --d 1234).")
    return number


def _integer(name: str, value: str, line: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise _error(line, f"--{name} {value!r} is not a whole number",
                     f"Write a whole number of 0 or more, e.g. {_EXAMPLES[name]}.")
    return int(value)


def _cfg_scale(value: str, line: str) -> float:
    try:
        scale = float(value)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale < 0:
        raise _error(line, f"--l {value!r} is not a CFG scale",
                     "Write a number of 0 or more, e.g. --l 7.5.")
    return scale


def _sampler(value: str, line: str) -> str:
    """kohya's sampler name or an A1111 / ComfyUI one, as our A1111 label."""
    from lora_studio.core.generate.samplers import resolve_sampler, sampler_names

    name = KOHYA_SAMPLERS.get(value.lower(), value)
    try:
        return resolve_sampler(name).label
    except StudioError as exc:
        kohya = ", ".join(sorted(KOHYA_SAMPLERS))
        raise _error(line, f"--ss {value!r} is not a sampler we know",
                     f"Use one of kohya's ({kohya}) or an A1111 name "
                     f"({', '.join(sampler_names())}).") from exc
