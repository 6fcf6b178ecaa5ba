"""A1111 / ComfyUI sampler names → diffusers schedulers.

Users arrive knowing samplers by AUTOMATIC1111's names ("DPM++ 2M Karras") or ComfyUI's
("dpmpp_2m" + scheduler "karras"). `make_scheduler` builds the matching diffusers scheduler with
`from_config(base_config, ...)`, so everything the base model's scheduler config says about the
noise schedule (betas, `prediction_type`, `timestep_spacing`, `steps_offset`, zero-SNR rescaling)
is kept: a v-prediction model stays v-prediction whatever sampler is picked.

The sampler and the schedule type are two settings, as in A1111 ≥ 1.9 (`Sampler: DPM++ 2M,
Schedule type: Karras`); the older one-string names ("DPM++ 2M Karras") are accepted too and split.
Lookup is case-insensitive. Asking for a schedule type a diffusers scheduler cannot do
(e.g. "Euler a" + Karras) is an error, never silently ignored.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping

from lora_studio.core.errors import StudioError


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: its A1111 name, the diffusers class and the options that make it so."""

    name: str
    scheduler_class: str
    options: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


_DPM_PP = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_DPM_PP_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}

# A1111 name → diffusers (see shared/REFERENCE.md §4). Aliases: ComfyUI and A1111 API names.
SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", {}, ("euler_ancestral", "k_euler_a")),
    SamplerSpec("Euler", "EulerDiscreteScheduler", {}, ("euler", "k_euler")),
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", _DPM_PP, ("dpmpp_2m", "k_dpmpp_2m")),
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler", _DPM_PP_SDE,
                ("dpmpp_2m_sde", "k_dpmpp_2m_sde")),
    SamplerSpec("DPM++ 3M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, ("dpmpp_3m_sde",)),
    SamplerSpec("DPM++ SDE", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++"},
                ("dpmpp_sde", "k_dpmpp_sde")),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, ("dpm_2", "k_dpm_2")),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, ("dpm_2_ancestral", "k_dpm_2_a")),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, ("heun", "k_heun")),
    SamplerSpec("LMS", "LMSDiscreteScheduler", {}, ("lms", "k_lms")),
    SamplerSpec("DDIM", "DDIMScheduler", {}, ("ddim",)),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, ("plms",)),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, ("uni_pc", "unipc")),
    SamplerSpec("DEIS", "DEISMultistepScheduler", {}, ("deis",)),
    SamplerSpec("LCM", "LCMScheduler", {}, ("lcm",)),
)

# Schedule type → the from_config options that select it. "Automatic" = the sampler's default.
# "SGM Uniform" is approximated by trailing timestep spacing (what diffusers calls it).
SCHEDULE_TYPES: dict[str, dict[str, Any]] = {
    "Automatic": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}
_SCHEDULE_ALIASES = {"normal": "Automatic", "default": "Automatic", "sgm_uniform": "SGM Uniform"}
# Sigma-schedule switches reset explicitly, so a base config that had one on does not leak it.
_SIGMA_SWITCHES = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")

_BY_NAME: dict[str, SamplerSpec] = {}
for _spec in SAMPLERS:
    for _key in (_spec.name, *_spec.aliases):
        _BY_NAME[_key.lower()] = _spec


@dataclass(frozen=True)
class ResolvedSampler:
    """A sampler choice in A1111's two-setting form plus the diffusers scheduler it means."""

    name: str  # canonical A1111 sampler name, e.g. "DPM++ 2M"
    schedule_type: str  # "Automatic", "Karras", ...
    scheduler_class: str
    options: dict[str, Any]  # extra from_config keyword arguments

    @property
    def label(self) -> str:
        """The old one-string A1111 name: "DPM++ 2M Karras" (no suffix for Automatic)."""
        if self.schedule_type == "Automatic":
            return self.name
        return f"{self.name} {self.schedule_type}"


def sampler_names() -> list[str]:
    """The canonical A1111 sampler names this build knows, in menu order."""
    return [spec.name for spec in SAMPLERS]


def schedule_type_names() -> list[str]:
    return list(SCHEDULE_TYPES)


def _canonical_schedule(schedule_type: str | None) -> str:
    if schedule_type is None or not schedule_type.strip():
        return "Automatic"
    key = schedule_type.strip().lower()
    for name in SCHEDULE_TYPES:
        if name.lower() == key:
            return name
    if key in _SCHEDULE_ALIASES:
        return _SCHEDULE_ALIASES[key]
    raise StudioError(
        f"Unknown schedule type {schedule_type!r}.",
        f"Use one of: {', '.join(SCHEDULE_TYPES)}.",
    )


def _split_name(name: str) -> tuple[SamplerSpec, str | None]:
    """Find the sampler in `name`, accepting an old-style schedule suffix ("DPM++ 2M Karras")."""
    key = " ".join(name.strip().split()).lower()
    if key in _BY_NAME:
        return _BY_NAME[key], None
    for schedule in SCHEDULE_TYPES:
        suffix = " " + schedule.lower()
        if key.endswith(suffix) and key[: -len(suffix)] in _BY_NAME:
            return _BY_NAME[key[: -len(suffix)]], schedule
    raise StudioError(
        f"Unknown sampler {name!r}.",
        f"Use one of: {', '.join(sampler_names())} (optionally with a schedule type such as "
        "Karras, e.g. \"DPM++ 2M Karras\").",
    )


def _scheduler_class(class_name: str, sampler: str) -> type:
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None or type(cls).__name__ == "DummyObject":
        needs = {"LMSDiscreteScheduler": "scipy", "DPMSolverSDEScheduler": "torchsde"}.get(
            class_name, "an optional package")
        raise StudioError(
            f"The {sampler!r} sampler needs {needs}, which is not installed.",
            f"Install it (pip install {needs}) or pick another sampler.",
        )
    return cls


def _accepted_options(cls: type) -> set[str]:
    """The config keys a scheduler class takes (its __init__ parameters)."""
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def resolve_sampler(name: str, schedule_type: str | None = None) -> ResolvedSampler:
    """Turn an A1111 / ComfyUI sampler name (+ optional schedule type) into a ResolvedSampler.

    `schedule_type` wins over a suffix in the name; a suffix and a different explicit schedule
    type together are an error. Unknown names raise StudioError listing the valid names.
    """
    spec, suffix = _split_name(name)
    schedule = _canonical_schedule(schedule_type)
    if suffix is not None:
        if schedule not in ("Automatic", suffix):
            raise StudioError(
                f"Sampler {name!r} already names schedule type {suffix!r}, but {schedule!r} "
                "was asked for too.",
                f"Use sampler {spec.name!r} with schedule type {schedule!r}.",
            )
        schedule = suffix
    options = dict(spec.options)
    options.update(SCHEDULE_TYPES[schedule])
    return ResolvedSampler(spec.name, schedule, spec.scheduler_class, options)


def make_scheduler(base_config: Mapping[str, Any], name: str, schedule_type: str | None = None):
    """Build the diffusers scheduler for an A1111 sampler from the model's scheduler config.

    Always pass the model's *original* scheduler config (not one already converted), so
    switching samplers back and forth never drifts.
    """
    resolved = resolve_sampler(name, schedule_type)
    cls = _scheduler_class(resolved.scheduler_class, resolved.name)
    accepted = _accepted_options(cls)
    # Turn off sigma schedules the base config may have switched on, unless this one asks for it.
    options = {k: False for k in _SIGMA_SWITCHES if k in accepted}
    options.update(resolved.options)
    unsupported = [k for k, v in resolved.options.items() if k not in accepted and v]
    if unsupported:
        raise StudioError(
            f"The {resolved.name!r} sampler cannot use the {resolved.schedule_type!r} schedule "
            "type in diffusers.",
            "Pick schedule type Automatic, or a sampler such as DPM++ 2M, Euler, Heun, DPM2 "
            "or UniPC.",
        )
    if "use_beta_sigmas" in options and options["use_beta_sigmas"]:
        from diffusers.utils import is_scipy_available

        if not is_scipy_available():
            raise StudioError("The Beta schedule type needs scipy, which is not installed.",
                              "Install it (pip install scipy) or pick another schedule type.")
    options = {k: v for k, v in options.items() if k in accepted}
    return cls.from_config(dict(base_config), **options)
