"""Benchmark: the GPU memory estimate (`core.train.memory`) beside what training really uses.

CPU (tiny models, ~1 min):   python tests/benchmarks/train_memory.py
Meta device (full size):     python tests/benchmarks/train_memory.py --meta
CUDA (full size, ~2 min):    HF_HUB_OFFLINE=1 python tests/benchmarks/train_memory.py --cuda

* default: the tiny SD 1.x and SDXL models (`make-tiny-model`), at 64 px batch 1 and 128 px
  batch 2, with and without gradient checkpointing: each part of the estimate beside the bytes
  a real CPU training step keeps (weights, LoRA, gradients, optimizer state after the step,
  and what autograd saves during the UNet forward), fp32 as on the CPU.
* --meta: the full-size SD 1.5 (512 px) and SDXL (1024 px) networks from the shipped configs on
  the meta device (no memory): the activations autograd saves in fp32 and under an emulation of
  CUDA's fp16 / bf16 autocast, and the VAE encoder's peak while caching 8 images, beside the
  estimate's.
* --cuda: random-weight SD 1.5 at 512 px (fp16) and SDXL at 1024 px (bf16) built from the shipped
  configs on the GPU, batch 1, rank 16, attention LoRA, AdamW, with / without checkpointing:
  memory_allocated after loading (weights), torch.cuda.max_memory_allocated over two training
  steps (the trainer's LoRA, optimizer and autocast) and while the VAE encodes a cache batch of
  8 images, and max_memory_reserved, beside the estimate's parts (the overhead, outside
  torch's allocator, is left out of "allocated"). The full trainer's run peaks are measured by
  tests/benchmarks/gpu_train.py (8 images per case, so its whole-run peak includes the cache
  pass). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MIB = 1024 ** 2


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:10.3f}"


def row(name: str, estimated: float, measured: float) -> str:
    ratio = f"{estimated / measured:6.3f}" if measured else "     -"
    return f"  {name:<26}{mib(estimated)} {mib(measured)}  {ratio}"


def header(title: str) -> None:
    print(f"\n{title}\n  {'part':<26}{'est. MiB':>10} {'meas. MiB':>10}  est/meas")


def config(res: int, **settings):
    from lora_studio.core.train.config import TrainConfig

    cfg = TrainConfig()
    cfg.dataset.resolution = res
    for key, value in settings.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


def tiny(args) -> None:
    import torch

    from lora_studio.core.models.tiny import make_tiny_model
    from lora_studio.core.models.tiny_sdxl import make_tiny_sdxl_model
    from lora_studio.core.train.memory import estimate_memory
    from memory_probe import load_networks, measure_step

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"sd1": make_tiny_model(Path(tmp) / "sd1"),
                   "sdxl": make_tiny_sdxl_model(Path(tmp) / "sdxl")}
        for arch, folder in folders.items():
            for res, batch in ((64, 1), (128, 2)):
                for gc in (False, True):
                    cfg = config(res, **{"lora.rank": 4, "train.batch_size": batch,
                                         "train.gradient_checkpointing": gc})
                    est = estimate_memory(cfg, arch, [(res, res)], model=folder)
                    got = measure_step(load_networks(folder), cfg, (res, res), batch, steps=1)
                    header(f"tiny {arch}, {res} px, batch {batch}, rank 4, fp32, "
                           f"checkpointing {'on' if gc else 'off'} (CPU)")
                    for name, mine, theirs in (
                            ("UNet weights", est.unet_weights, got["unet"]),
                            ("text encoder weights", est.text_encoder_weights,
                             got["text_encoders"]),
                            ("VAE weights", est.vae_weights, got["vae"]),
                            ("LoRA parameters", est.lora_params, got["params"]),
                            ("LoRA gradients", est.lora_grads, got["grads"]),
                            ("optimizer state", est.optimizer_state, got["optimizer"]),
                            ("activations (saved)", est.activations, got["activations"])):
                        print(row(name, mine, theirs))


def meta(args) -> None:
    import torch

    from lora_studio.core.paths import configs_dir
    from lora_studio.core.train.memory import estimate_memory
    from lora_studio.core.train.memory_counts import read_config
    from memory_probe import PeakBytes, meta_flash_attention, unet_activation_bytes
    from memory_probe import unet_with_lora

    for arch, folder, res in (("sd1", "sd15", 512), ("sdxl", "sdxl", 1024)):
        unet_config = read_config(configs_dir() / folder, "unet")
        for gc in (False, True):
            header(f"{folder} {res} px, batch 1, rank 16, attention, checkpointing "
                   f"{'on' if gc else 'off'} (meta device)")
            for precision in ("no", "bf16"):
                half = torch.bfloat16 if precision == "bf16" else None
                unet = unet_with_lora(unet_config, device="meta", rank=16, checkpointing=gc,
                                      weight_dtype=half or torch.float32)
                counted = unet_activation_bytes(unet, 1, res // 8, res // 8, autocast=half)
                est = estimate_memory(config(res, **{"train.mixed_precision": precision,
                                                     "train.gradient_checkpointing": gc}),
                                      arch, [(res, res)])
                print(row(f"activations {'fp32' if half is None else 'bf16 autocast'}",
                          est.activations, counted))
        vae = _meta_vae(configs_dir() / folder)
        with torch.no_grad(), meta_flash_attention(), PeakBytes() as peak:
            vae.encode(torch.empty(8, 3, res, res, device="meta")).latent_dist.mean.float()
        est = estimate_memory(config(res), arch, [(res, res)] * 8)
        print(row("VAE encoding 8 images fp32", est.encoding, peak.peak))


def _meta_vae(folder: Path):
    from lora_studio.core.train.memory_counts import meta_network

    return meta_network(str(folder), "vae")


def cuda(args) -> None:
    import torch

    from lora_studio.core.paths import configs_dir
    from lora_studio.core.train.memory import estimate_memory
    from memory_probe import load_networks, measure_step

    from lora_studio.core.train.memory import ALLOCATOR_SLACK

    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for arch, folder, res, precision in (("sd1", "sd15", 512, "fp16"),
                                         ("sdxl", "sdxl", 1024, "bf16")):
        for gc in (False, True):
            cfg = config(res, **{"lora.rank": 16, "train.mixed_precision": precision,
                                 "train.gradient_checkpointing": gc})
            est = estimate_memory(cfg, arch, [(res, res)] * 8)
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
            vae_dtype = torch.float32 if arch == "sdxl" and precision == "fp16" else dtype
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            nets = load_networks(configs_dir() / folder, random_weights=True, device="cuda",
                                 dtype=dtype, vae_dtype=vae_dtype)
            loaded = torch.cuda.memory_allocated()
            got = measure_step(nets, cfg, (res, res), 1, cache_images=8)
            header(f"{folder} {res} px, batch 1, rank 16, {precision}, checkpointing "
                   f"{'on' if gc else 'off'} (CUDA)")
            print(row("weights (allocated)", est.weights, loaded))
            print(row("LoRA + optimizer", est.training_state,
                      got["params"] + got["grads"] + got["optimizer"]))
            print(row("activations (saved)", est.activations, got["activations"]))
            step = est.weights + est.training_state + est.activations + est.recompute
            print(row("training step peak", step, got["peak_step"]))
            print(row("VAE cache pass peak", est.weights + est.lora_params + est.encoding,
                      got["peak_encode"]))
            print(row("allocated peak", est.allocated, max(got["peak_step"],
                                                           got["peak_encode"])))
            print(row("reserved peak", est.allocated * (1 + ALLOCATOR_SLACK), got["reserved"]))
            del nets
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta", action="store_true", help="full-size models, meta device")
    parser.add_argument("--cuda", action="store_true", help="full-size models on a CUDA GPU")
    args = parser.parse_args()
    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--cuda needs a CUDA GPU; run without it for the tiny models on the CPU.")
        cuda(args)
    elif args.meta:
        meta(args)
    else:
        tiny(args)


if __name__ == "__main__":
    main()
