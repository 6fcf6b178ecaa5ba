"""What the UNet is trained to predict, and how the loss is weighted.

* The target follows the base model's noise scheduler: `epsilon` models predict the noise,
  `v_prediction` models (SD 2.x 768-v) predict the velocity `alpha_t * noise - sigma_t * x0`
  (`scheduler.get_velocity`). Training a v-model on an epsilon target ruins it silently.
* Min-SNR weighting (Hang et al. 2023), as in the diffusers reference scripts:
  weight = min(SNR(t), gamma) / SNR(t) for epsilon, min(SNR(t), gamma) / (SNR(t) + 1) for v.
* Noise offset: `noise += offset * randn(b, c, 1, 1)` (a per-channel constant shift), which lets
  a model learn very dark / very bright images.
The loss is always computed in fp32, whatever the autocast precision of the forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lora_studio.core.errors import StudioError


def prediction_type(scheduler) -> str:
    return scheduler.config.prediction_type


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """The tensor the UNet should output for `add_noise(latents, noise, timesteps)`."""
    kind = prediction_type(scheduler)
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise StudioError(f"The base model predicts {kind!r}, which LoRA Studio cannot train yet.",
                      "Use an epsilon or v-prediction Stable Diffusion model.")


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma weighting for the scheduler's target."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps).float()
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type(scheduler) == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """`noise + offset * randn(b, c, 1, 1)` (no-op when offset is 0)."""
    if not offset:
        return noise
    b, c = noise.shape[:2]
    shift = torch.randn((b, c, 1, 1), generator=generator, device=generator.device)
    return noise + offset * shift.to(noise.device, noise.dtype)


def diffusion_loss(model_pred: torch.Tensor, target: torch.Tensor, scheduler,
                   timesteps: torch.Tensor, min_snr_gamma: float = 0.0,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error in fp32, min-SNR weighted per sample when gamma > 0, and times
    `weights` per sample when given (kohya's loss_weights: prior_loss_weight on
    regularization images); the mean over the batch, as kohya takes it."""
    per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    per_sample = per_sample.mean(dim=list(range(1, per_sample.dim())))
    if min_snr_gamma > 0:
        per_sample = per_sample * min_snr_weights(scheduler, timesteps, min_snr_gamma).to(
            per_sample.device)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample.device, per_sample.dtype)
    return per_sample.mean()


class DiffusionObjective:
    """The denoising objective of the Stable Diffusion families (DDPM forward process): what a
    training step draws (noise, timesteps), how it noises the latents, what the denoiser must
    predict and the loss. A family with another objective (flow matching) supplies a class with
    the same methods; the loop and validation only call these."""

    def __init__(self, scheduler, *, min_timestep: int = 0, max_timestep: int = 1000,
                 noise_offset: float = 0.0, min_snr_gamma: float = 0.0):
        self.scheduler = scheduler
        self.min_timestep = min_timestep
        # kohya's timestep range: timesteps drawn from [min_timestep, top_timestep)
        self.top_timestep = min(max_timestep, scheduler.config.num_train_timesteps)
        self.noise_offset = noise_offset
        self.min_snr_gamma = min_snr_gamma

    def draw(self, latents: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, timesteps) for a batch of latents, from `generator` only."""
        noise = torch.randn(latents.shape, generator=generator, device=generator.device)
        noise = offset_noise(noise, self.noise_offset, generator)
        timesteps = torch.randint(self.min_timestep, self.top_timestep, (latents.shape[0],),
                                  generator=generator, device=generator.device)
        return noise.to(latents.device), timesteps.to(latents.device)

    def noisy(self, latents: torch.Tensor, noise: torch.Tensor,
              timesteps: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(latents, noise, timesteps)

    def target(self, latents: torch.Tensor, noise: torch.Tensor,
               timesteps: torch.Tensor) -> torch.Tensor:
        return training_target(self.scheduler, latents, noise, timesteps)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        return diffusion_loss(pred, target, self.scheduler, timesteps, self.min_snr_gamma,
                              weights)


def step_loss(family, objective, latents: torch.Tensor, noise: torch.Tensor,
              timesteps: torch.Tensor, cond, geometry, dtype: torch.dtype,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of one batch at given noise and timesteps (fp32): noise the latents, let the
    family's denoiser predict, compare with the objective's target. Training draws noise and
    timesteps at random; validation passes fixed ones, so its values compare across steps."""
    noisy = objective.noisy(latents, noise, timesteps)
    target = objective.target(latents, noise, timesteps)
    pred = family.predict(noisy, timesteps, cond, geometry, dtype)
    return objective.loss(pred, target, timesteps, weights)
