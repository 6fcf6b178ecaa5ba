"""Train Tiny Shapes from scratch on a CPU: `lora-studio tiny-shapes train OUT`.

One readable pipeline, in order:
1. the tokenizer (`tokenizer.build_tokenizer`), the components at their tiny sizes;
2. the VAE: L1 + MSE with the shape's pixels weighted up (or colors come out wrong) and a
   tiny KL term, on every shape and texture of the world (it is the codec: like SD's VAE it
   must encode anything, including what only LoRAs will teach);
3. latents of the base world's training scenes, and the VAE scaling factor from their spread;
4. UNet + text encoder together, v-prediction on a linear beta schedule, min-SNR weighting,
   EMA weights, 10 % empty captions (for classifier-free guidance) and the reserved trigger
   words mixed into captions as words that change nothing;
5. the EMA weights saved as a diffusers folder, with an Euler scheduler using "trailing"
   timesteps (what makes 20 steps land on the model's real end point).
Deterministic for a seed (one process, fixed thread count): same seed, same model.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lora_studio.core.models.tiny_shapes import tokenizer as vocab
from lora_studio.core.models.tiny_shapes import world

Log = Callable[[str], None]


@dataclass
class ShapesTrainConfig:
    seed: int = 0
    images: int = 12_000  # base-world scenes drawn once for UNet training
    vae_images: int = 6_000  # every shape and texture, for the VAE
    vae_steps: int = 2_000
    vae_batch: int = 48
    vae_crop: int = 32  # the VAE is convolutional: it learns as well from crops, 4x cheaper
    vae_lr: float = 2e-3
    steps: int = 4_600
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    empty_caption: float = 0.1
    reserved_word: float = 0.15
    min_snr_gamma: float = 5.0
    threads: int = 2
    log_every: int = 100
    checkpoint_every: int = 0  # 0: no intermediate models


# ----------------------------------------------------------------------------- components
def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), norm_num_groups=8, sample_size=world.SIDE)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=world.SIDE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        # SD 1.5's layout: cross-attention at 16x16 and 8x8, none at 4x4, so block weights and
        # LoRA targets mean what they mean there. Measured against attention at 8x8 / 4x4 only:
        # the quickstart LoRA's large stars 0.37 -> 0.60; small stars still 0 in both.
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=4, norm_num_groups=32)


def make_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=vocab.MAX_LENGTH, hidden_act="quick_gelu",
        projection_dim=64, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def noise_schedule_config() -> dict:
    return dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                beta_schedule="linear", prediction_type="v_prediction", clip_sample=False,
                timestep_spacing="trailing", steps_offset=1)


# ----------------------------------------------------------------------------- data
def render(scenes: list[world.Scene]):
    """Images as a float tensor in [-1, 1] (N, 3, 64, 64) and foreground masks (N, 1, 64, 64)."""
    import numpy as np
    import torch

    pixels = np.stack([np.asarray(world.draw(s), dtype=np.uint8) for s in scenes])
    backgrounds = np.array([world.BACKGROUNDS[s.background] for s in scenes], dtype=np.int16)
    masks = np.abs(pixels.astype(np.int16) - backgrounds[:, None, None, :]).sum(-1) > 30
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return images, torch.from_numpy(masks)[:, None].float()


def training_caption(scene: world.Scene, rng: random.Random, cfg: ShapesTrainConfig) -> str:
    """The caption the model sees this time: empty, plain, or with a reserved word in it."""
    if rng.random() < cfg.empty_caption:
        return ""
    if rng.random() < cfg.reserved_word:
        return scene.caption(trigger=rng.choice(vocab.RESERVED_WORDS))
    return scene.caption()


# ----------------------------------------------------------------------------- stages
def train_vae(vae, cfg: ShapesTrainConfig, log: Log):
    import torch

    rng = random.Random(cfg.seed + 1)
    scenes = [world.random_scene(rng, world.SHAPES + world.CONCEPT_SHAPES,
                                 rng.choice(world.TEXTURES)) for _ in range(cfg.vae_images)]
    images, masks = render(scenes)
    weights = 1.0 + 4.0 * masks
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    vae.train()
    started = time.time()
    for step in range(1, cfg.vae_steps + 1):
        _set_lr(optimizer, cfg.vae_lr, step, cfg.vae_steps, 100)
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=generator)
        oy, ox = (int(v) for v in torch.randint(0, world.SIDE - cfg.vae_crop + 1, (2,),
                                                generator=generator))
        window = (slice(None), slice(None), slice(oy, oy + cfg.vae_crop),
                  slice(ox, ox + cfg.vae_crop))
        x, w = images[idx][window], weights[idx][window]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape,
                                                         generator=generator)
        recon = vae.decode(z).sample
        error = recon - x
        loss = (w * error.abs()).mean() + (w * error.square()).mean() \
            + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % cfg.log_every == 0 or step == cfg.vae_steps:
            log(f"vae step {step}/{cfg.vae_steps} loss {loss.item():.4f} "
                f"({time.time() - started:.0f} s)")
    vae.eval()
    return vae


def encode_latents(vae, images, batch: int = 256):
    import torch

    with torch.no_grad():
        return torch.cat([vae.encode(images[i:i + batch]).latent_dist.mean
                          for i in range(0, len(images), batch)])


def train_denoiser(unet, text_encoder, tokenizer, latents, scenes, cfg: ShapesTrainConfig,
                   log: Log, checkpoint: Callable[[int], None] | None = None):
    """UNet + text encoder on the latents (already scaled); they end holding the EMA weights.
    `checkpoint(step)` is called every `cfg.checkpoint_every` steps with the EMA weights in
    place (e.g. to save and score a model half way)."""
    import torch
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler(**noise_schedule_config())
    alphas = noise_scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    rng = random.Random(cfg.seed + 3)
    generator = torch.Generator().manual_seed(cfg.seed + 4)
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    unet.train()
    text_encoder.train()
    started = time.time()
    for step in range(1, cfg.steps + 1):
        _set_lr(optimizer, cfg.lr, step, cfg.steps, cfg.warmup)
        idx = torch.randint(0, len(latents), (cfg.batch,), generator=generator)
        captions = [training_caption(scenes[int(i)], rng, cfg) for i in idx]
        ids = tokenizer(captions, padding="max_length", max_length=vocab.MAX_LENGTH,
                        truncation=True, return_tensors="pt").input_ids
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (cfg.batch,), generator=generator)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        target = noise_scheduler.get_velocity(x0, noise, t)
        hidden = text_encoder(ids)[0]
        pred = unet(noisy, t, hidden).sample
        weight = torch.clamp(snr[t], max=cfg.min_snr_gamma) / (snr[t] + 1)  # min-SNR, v-pred
        loss = ((pred - target).square().mean(dim=(1, 2, 3)) * weight).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 \
                and step < cfg.steps:
            with _swapped(params, ema):
                checkpoint(step)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = step / (time.time() - started)
            log(f"unet step {step}/{cfg.steps} loss {loss.item():.4f} "
                f"({time.time() - started:.0f} s, {1 / rate:.2f} s/step)")
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()


class _swapped:
    """Within the block the parameters hold the EMA values; afterwards their own again."""

    def __init__(self, params, ema) -> None:
        self.params, self.ema = params, ema

    def __enter__(self):
        import torch

        with torch.no_grad():
            self.saved = [p.detach().clone() for p in self.params]
            for p, e in zip(self.params, self.ema):
                p.copy_(e)

    def __exit__(self, *exc) -> None:
        import torch

        with torch.no_grad():
            for p, s in zip(self.params, self.saved):
                p.copy_(s)


def _set_lr(optimizer, peak: float, step: int, total: int, warmup: int) -> None:
    if step <= warmup:
        lr = peak * step / warmup
    else:
        progress = (step - warmup) / max(1, total - warmup)
        lr = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    for group in optimizer.param_groups:
        group["lr"] = lr


# ----------------------------------------------------------------------------- all of it
def train_tiny_shapes(out_dir: str | Path, cfg: ShapesTrainConfig | None = None,
                      log: Log = print) -> Path:
    """Train the whole model and save it to `out_dir` (diffusers format, float32: 7 MB; fp16
    weights load as a mix of dtypes in plain diffusers on a CPU)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from lora_studio.core.models.tiny import save_pipeline_folder

    cfg = cfg or ShapesTrainConfig()
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # guard: denormals can make CPU steps crawl (a run stalled)
    torch.manual_seed(cfg.seed)
    started = time.time()
    tokenizer = vocab.build_tokenizer()
    vae, unet, text_encoder = make_vae(), make_unet(), make_text_encoder(tokenizer)
    log(f"parameters: vae {_count(vae):,}, unet {_count(unet):,}, "
        f"text encoder {_count(text_encoder):,}, vocabulary {len(tokenizer)}")
    train_vae(vae, cfg, log)
    scenes = world.random_scenes(cfg.images, cfg.seed + 5)
    images, _ = render(scenes)
    latents = encode_latents(vae, images)
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    log(f"latents {tuple(latents.shape)}, scaling factor {scale:.4f}")
    out_dir = Path(out_dir)

    def save(folder: Path) -> None:
        scheduler = EulerDiscreteScheduler(**{k: v for k, v in noise_schedule_config().items()
                                              if k != "clip_sample"})
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                       unet=unet, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        save_pipeline_folder(pipe, folder)

    def checkpoint(step: int) -> None:
        folder = out_dir.with_name(f"{out_dir.name}-step{step}")
        save(folder)
        log(f"saved the EMA model of step {step} to {folder}")

    train_denoiser(unet, text_encoder, tokenizer, latents * scale, scenes, cfg, log, checkpoint)
    save(out_dir)
    log(f"saved {out_dir} after {(time.time() - started) / 60:.1f} min")
    return out_dir


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())
