"""A1111 sampler names → diffusers schedulers, keeping the model's noise-schedule settings."""

from __future__ import annotations

import pytest

from lora_studio.core.errors import StudioError
from lora_studio.core.generate.samplers import (
    make_scheduler,
    resolve_sampler,
    sampler_names,
)

# name, diffusers class, use_karras_sigmas, algorithm_type (None: the class has no such option)
EXPECTED = [
    ("Euler a", "EulerAncestralDiscreteScheduler", None, None),
    ("Euler", "EulerDiscreteScheduler", False, None),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", False, "dpmsolver++"),
    ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", True, "dpmsolver++"),
    ("DPM++ 2M SDE", "DPMSolverMultistepScheduler", False, "sde-dpmsolver++"),
    ("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", True, "sde-dpmsolver++"),
    ("DPM++ SDE", "DPMSolverSinglestepScheduler", False, "dpmsolver++"),
    ("DPM++ SDE Karras", "DPMSolverSinglestepScheduler", True, "dpmsolver++"),
    ("DPM2", "KDPM2DiscreteScheduler", False, None),
    ("DPM2 a", "KDPM2AncestralDiscreteScheduler", False, None),
    ("DPM2 Karras", "KDPM2DiscreteScheduler", True, None),
    ("Heun", "HeunDiscreteScheduler", False, None),
    ("DDIM", "DDIMScheduler", None, None),
    ("UniPC", "UniPCMultistepScheduler", False, None),
    ("LCM", "LCMScheduler", None, None),
    ("PLMS", "PNDMScheduler", None, None),
]


@pytest.fixture(scope="module")
def vpred_config():
    """An SD 2.x-768-style scheduler config: v-prediction with non-default spacing."""
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=1,
        rescale_betas_zero_snr=True,
    ).config)


@pytest.mark.parametrize("name, cls, karras, algorithm", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_each_a1111_name_builds_its_scheduler_and_keeps_v_prediction(vpred_config, name, cls,
                                                                     karras, algorithm):
    scheduler = make_scheduler(vpred_config, name)
    assert type(scheduler).__name__ == cls
    assert scheduler.config.get("use_karras_sigmas") == karras
    assert scheduler.config.get("algorithm_type") == algorithm
    # the model's noise-schedule settings survive the switch
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.timestep_spacing == "trailing"
    assert scheduler.config.steps_offset == 1
    assert scheduler.config.beta_schedule == "scaled_linear"


def test_every_listed_name_resolves(vpred_config):
    required = {"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "DPM2", "DPM2 a",
                "Heun", "LMS", "DDIM", "UniPC", "LCM"}
    assert required <= set(sampler_names())
    for name in sampler_names():
        if name == "LMS":
            continue  # needs scipy; checked below
        assert make_scheduler(vpred_config, name).config.prediction_type == "v_prediction"


def test_lms_needs_scipy_and_says_so(vpred_config):
    from diffusers.utils import is_scipy_available

    if is_scipy_available():
        assert type(make_scheduler(vpred_config, "LMS")).__name__ == "LMSDiscreteScheduler"
    else:
        with pytest.raises(StudioError, match="scipy"):
            make_scheduler(vpred_config, "LMS")


def test_lookup_is_case_insensitive_and_accepts_the_schedule_type_split():
    old = resolve_sampler("DPM++ 2M Karras")
    new = resolve_sampler("dpm++ 2m", "karras")
    comfy = resolve_sampler("dpmpp_2m", "karras")
    assert old == new == comfy
    assert (old.name, old.schedule_type, old.label) == ("DPM++ 2M", "Karras", "DPM++ 2M Karras")
    plain = resolve_sampler("EULER A")
    assert (plain.name, plain.schedule_type, plain.label) == ("Euler a", "Automatic", "Euler a")


def test_sde_karras_from_comfyui_names(vpred_config):
    scheduler = make_scheduler(vpred_config, "dpmpp_2m_sde", "karras")
    assert scheduler.config.algorithm_type == "sde-dpmsolver++"
    assert scheduler.config.use_karras_sigmas is True


def test_unknown_sampler_lists_the_valid_names():
    with pytest.raises(StudioError) as info:
        resolve_sampler("Euler b")
    message = str(info.value)
    assert "Euler b" in message
    for name in ("Euler a", "DPM++ 2M", "UniPC"):
        assert name in message


def test_unknown_schedule_type_and_conflicts_are_errors(vpred_config):
    with pytest.raises(StudioError, match="Karras"):
        resolve_sampler("Euler", "Karas")
    with pytest.raises(StudioError):
        resolve_sampler("DPM++ 2M Karras", "Exponential")
    with pytest.raises(StudioError, match="Euler a"):  # diffusers has no Karras Euler a
        make_scheduler(vpred_config, "Euler a", "Karras")


def test_switching_back_from_karras_turns_karras_off():
    """A model whose own scheduler is DPM++ 2M Karras must still give plain DPM++ 2M."""
    from diffusers import DPMSolverMultistepScheduler

    base = dict(DPMSolverMultistepScheduler(use_karras_sigmas=True,
                                            algorithm_type="sde-dpmsolver++").config)
    plain = make_scheduler(base, "DPM++ 2M")
    assert plain.config.use_karras_sigmas is False
    assert plain.config.algorithm_type == "dpmsolver++"
