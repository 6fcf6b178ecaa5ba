"""Training targets and loss weighting follow the base model's noise scheduler."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from lora_studio.core.train.objective import (
    diffusion_loss,
    min_snr_weights,
    offset_noise,
    training_target,
)


def _scheduler(prediction_type):
    return DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         prediction_type=prediction_type)


def _batch():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g),
            torch.tensor([10, 500, 990]))


def test_epsilon_models_learn_the_noise():
    latents, noise, t = _batch()
    assert torch.equal(training_target(_scheduler("epsilon"), latents, noise, t), noise)


def test_v_prediction_models_learn_the_velocity():
    latents, noise, t = _batch()
    sched = _scheduler("v_prediction")
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = abar.sqrt() * noise - (1 - abar).sqrt() * latents
    target = training_target(sched, latents, noise, t)
    assert torch.allclose(target, expected, atol=1e-5)
    assert not torch.allclose(target, noise, atol=1e-2)


def test_min_snr_weights_follow_the_reference_formula():
    _, _, t = _batch()
    for kind, denominator in (("epsilon", lambda s: s), ("v_prediction", lambda s: s + 1)):
        sched = _scheduler(kind)
        abar = sched.alphas_cumprod[t]
        snr = abar / (1 - abar)
        expected = torch.minimum(snr, torch.full_like(snr, 5.0)) / denominator(snr)
        assert torch.allclose(min_snr_weights(sched, t, 5.0), expected, rtol=1e-4)
    # low-noise timesteps (high SNR) are down-weighted, so loss with gamma < loss without
    pred, target = torch.zeros(3, 4, 8, 8), torch.ones(3, 4, 8, 8)
    sched = _scheduler("epsilon")
    assert diffusion_loss(pred, target, sched, t, 5.0) < diffusion_loss(pred, target, sched, t)


def test_noise_offset_adds_a_constant_per_channel():
    noise = torch.zeros(2, 4, 8, 8)
    out = offset_noise(noise, 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # constant over H, W
    assert out.abs().max() > 0
    assert offset_noise(noise, 0.0, torch.Generator()) is noise


def test_loss_is_fp32_even_for_half_predictions():
    pred = torch.ones(1, 4, 4, 4, dtype=torch.bfloat16)
    loss = diffusion_loss(pred, torch.zeros(1, 4, 4, 4), _scheduler("epsilon"), torch.tensor([5]))
    assert loss.dtype == torch.float32 and loss.item() == 1.0
