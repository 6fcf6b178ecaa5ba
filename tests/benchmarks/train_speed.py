"""Benchmark: time per training step of LoRA Studio's trainer vs a plain reference loop.

Run:  HF_HUB_OFFLINE=1 python tests/benchmarks/train_speed.py [--steps 30] [--resolution 64]

Same tiny model, same data (resources/sample_dataset), same LoRA (rank 8, attention), same batch
size, in one process, one after the other:
  * ours, cache_latents = true   (VAE latents + caption embeddings computed once per image)
  * ours, cache_latents = false  (VAE + text encoder every step, like the reference)
  * plain loop                   (the diffusers train_text_to_image_lora.py shape: load the
                                  batch, VAE-encode, text-encode, noise, UNet, loss, step)
Prints ms/step (median over steps after warm-up) and the ratios. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

WARMUP = 3


def ours(cache: bool, steps: int, resolution: int, batch: int, out: Path) -> list[float]:
    from lora_studio.core import events as ev
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.paths import sample_dataset_dir
    from lora_studio.core.train.config import config_from_dict
    from lora_studio.core.train.trainer import run_training_job

    cfg = config_from_dict({
        "model": {"base": "tiny"},
        "dataset": {"path": str(sample_dataset_dir()), "resolution": resolution},
        "lora": {"rank": 8, "alpha": 8.0, "targets": "attention"},
        "train": {"steps": steps, "batch_size": batch, "cache_latents": cache,
                  "learning_rate": 1e-4, "max_grad_norm": 1.0},
        "output": {"path": str(out), "name": f"bench-{cache}"},
    })
    stamps: list[float] = []

    def emit(event):
        if isinstance(event, ev.StepProgress):
            stamps.append(time.perf_counter())
        elif isinstance(event, ev.JobStarted):
            stamps.append(time.perf_counter())
        elif isinstance(event, ev.Failed):
            raise SystemExit(f"benchmark run failed: {event.message}\n{event.details}")

    run_training_job(cfg, emit, JobControl())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def plain_loop(steps: int, resolution: int, batch: int) -> list[float]:
    """The reference-script loop: everything encoded every step."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    from lora_studio.core.dataset.checks import check_dataset
    from lora_studio.core.dataset.transforms import image_to_tensor, load_image_rgb, prepare_image
    from lora_studio.core.models.loading import load_pipeline
    from lora_studio.core.paths import sample_dataset_dir

    torch.manual_seed(0)
    pipe = load_pipeline(None)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    for m in (unet, vae, te):
        m.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    items = check_dataset(sample_dataset_dir()).items
    rng = random.Random(0)
    times = []
    unet.train()
    for _ in range(steps):
        tick = time.perf_counter()
        chosen = rng.sample(items, batch)
        pixels = torch.stack([image_to_tensor(prepare_image(load_image_rgb(it.image_path),
                                                            resolution)) for it in chosen])
        ids = tok([it.caption for it in chosen], padding="max_length", truncation=True,
                  max_length=tok.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            hidden = te(ids)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,))
        pred = unet(sched.add_noise(latents, noise, t), t, hidden).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - tick)
    return times


def _ms(times: list[float]) -> float:
    return 1000 * statistics.median(times[WARMUP:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["LORA_STUDIO_HOME"] = home
        out = Path(home) / "out"
        results = {
            "plain loop (encode every step)": _ms(plain_loop(args.steps, args.resolution,
                                                             args.batch)),
            "ours, cache_latents=false": _ms(ours(False, args.steps, args.resolution,
                                                  args.batch, out)),
            "ours, cache_latents=true": _ms(ours(True, args.steps, args.resolution,
                                                 args.batch, out)),
        }
    import torch

    print(f"tiny model, {args.resolution}px, batch {args.batch}, {args.steps} steps "
          f"(median after {WARMUP} warm-up), torch threads {torch.get_num_threads()}")
    plain = results["plain loop (encode every step)"]
    for name, ms in results.items():
        print(f"  {name:34s} {ms:8.1f} ms/step   plain/this = {plain / ms:5.2f}x")


if __name__ == "__main__":
    main()
