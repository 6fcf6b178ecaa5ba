"""Benchmark: a slider move to a new live preview, and generation with stacked vs fused LoRAs.

Run:  OMP_NUM_THREADS=1 python tests/benchmarks/mix_speed.py [--repeats 7] [--stack 4] [--sd15]

One process, the variants interleaved in every repeat (so a busy machine slows all alike), the
median of the repeats after one warm-up, on the built-in Tiny Shapes model and, with `--sd15`, a
random-weight model with SD 1.5's layout (its UNet blocks, 2 layers per block, 16 transformer
blocks, a 12-layer CLIP text encoder: the same LoRA layer count as SD 1.5) at reduced width and
`--sd15-size` px (256). The LoRAs are random kohya files (rank 8, alpha 4, UNet attention + feed-forward and
text encoder), `--stack` of them loaded.

(i) slider move → new preview image (the live preview's request: 12 steps, DPM++ 2M, seed 1234):
  * scales only   `set_weight` re-scales the moved LoRA's layers (what the app does)
  * set_adapters  the former path: the full `set_adapters` pass on the move and around the render
  * reload        remove the LoRAs and load them again at the new weights, then render
  with "apply" = the time before the render starts, and "total" = apply + render.
(ii) one Generate-tab render (20 steps, Euler a) with k = 0, 1, 2, 4 LoRAs, unfused (adapters
  active) vs fused (`lora-studio fuse` into a diffusers folder, then loaded like any model).
  k = 0 is the bare base; fused / base should be ~1.0.
Not collected by pytest; timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="Already found a `peft_config`")

PROMPT = "a red circle on a blue background"


# ---------------------------------------------------------------------- models and LoRAs
def make_sd15_shaped(out: Path, size: int = 256) -> Path:
    """SD 1.5's configs (resources/configs/sd15) at reduced width, random weights, `size` px."""
    import json

    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lora_studio.core.models.tiny import save_pipeline_folder
    from lora_studio.core.paths import configs_dir

    sd15 = configs_dir() / "sd15"
    torch.manual_seed(0)
    unet_cfg = json.loads((sd15 / "unet" / "config.json").read_text())
    unet_cfg.update(block_out_channels=[64, 128, 256, 256], cross_attention_dim=256,
                    sample_size=size // 8)
    unet = UNet2DConditionModel.from_config(unet_cfg)
    vae_cfg = json.loads((sd15 / "vae" / "config.json").read_text())
    vae_cfg.update(block_out_channels=[32, 64, 64, 64], layers_per_block=1, sample_size=size)
    vae = AutoencoderKL.from_config(vae_cfg)
    tokenizer = CLIPTokenizer.from_pretrained(sd15 / "tokenizer")
    text_cfg = CLIPTextConfig.from_pretrained(sd15 / "text_encoder")
    text_cfg.update({"hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4,
                     "projection_dim": 256})
    text_encoder = CLIPTextModel(text_cfg)
    scheduler = DDPMScheduler.from_pretrained(sd15 / "scheduler")
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    save_pipeline_folder(pipe, out)
    return out


def make_loras(model_dir: Path, out: Path, count: int) -> list[Path]:
    from lora_studio.core.lora.formats import write_lora
    from lora_studio.core.lora.testing import make_random_lora

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        lora = make_random_lora(model_dir, rank=8, alpha=4.0, seed=10 + i)
        for module in lora.modules.values():  # a random update as small as a trained one
            module.up.mul_(0.1)
        paths.append(write_lora(lora, out / f"bench{i}.safetensors", layout="kohya"))
    return paths


# ---------------------------------------------------------------------- sessions
def sessions():
    from lora_studio.core.generate.adapters import set_adapter_weights
    from lora_studio.core.generate.session import GenerationSession

    class SetAdaptersSession(GenerationSession):
        """The session before slider moves re-scaled one adapter: every apply is the full
        `set_adapters` pass over every LoRA layer of every adapter."""

        def _apply_adapters(self, active=None) -> None:
            pipe = self._pipe
            if pipe is None or not self._loras:
                return
            if active is None:
                active = [(lo.name, lo.weight, lo.block_weights)
                          for lo in self._loras.values() if lo.enabled]
            if not active:
                pipe.disable_lora()
                return
            pipe.enable_lora()
            set_adapter_weights(pipe, active)

    return GenerationSession, SetAdaptersSession


def loaded(cls, model: Path, loras: list[Path], weight: float = 0.6):
    session = cls(model)
    for path in loras:
        session.add_lora(path, weight=weight)
    return session


def preview_request():
    from lora_studio.core.generate.session import GenerationRequest
    from lora_studio.ui.live_preview import PREVIEW_SAMPLER, PREVIEW_SEED, PREVIEW_STEPS

    return GenerationRequest(PROMPT, steps=PREVIEW_STEPS, cfg=7.0, seed=PREVIEW_SEED,
                             sampler=PREVIEW_SAMPLER, count=1)


# ---------------------------------------------------------------------- (i) slider
def slider_moves(model: Path, loras: list[Path], repeats: int) -> tuple[dict, bool]:
    import numpy as np

    fast_cls, old_cls = sessions()
    request = preview_request()
    runs = {"scales only": loaded(fast_cls, model, loras),
            "set_adapters": loaded(old_cls, model, loras),
            "reload": loaded(fast_cls, model, loras)}
    times = {name: ([], []) for name in runs}  # (apply, total)
    same = True
    for r in range(repeats + 1):
        weight = round(0.2 + 0.1 * (r % 7), 2)  # a new value every time
        images = {}
        for name, session in runs.items():
            moved = session.loras[0].name
            tick = time.perf_counter()
            if name == "reload":
                for lora in session.loras:
                    session.remove_lora(lora.name)
                for i, path in enumerate(loras):
                    session.add_lora(path, weight=weight if i == 0 else 0.6)
            else:
                session.set_weight(moved, weight)
            applied = time.perf_counter()
            images[name] = np.asarray(session.generate(request)[0].image)
            done = time.perf_counter()
            if r:  # the first round is the warm-up
                times[name][0].append(applied - tick)
                times[name][1].append(done - tick)
        same &= all(np.array_equal(images["scales only"], im) for im in images.values())
    return {name: (_ms(a), _ms(t)) for name, (a, t) in times.items()}, same


# ---------------------------------------------------------------------- (ii) fused
def fused_vs_unfused(model: Path, loras: list[Path], ks: list[int], repeats: int,
                     work: Path) -> tuple[dict, dict]:
    import numpy as np

    from lora_studio.core.generate.session import GenerationRequest, GenerationSession
    from lora_studio.core.lora.fuse import fuse_loras

    request = GenerationRequest(PROMPT, steps=20, seed=7)  # the Generate tab's defaults
    runs = {(0, "base"): GenerationSession(model)}
    for k in ks:
        if k:
            runs[(k, "unfused")] = loaded(GenerationSession, model, loras[:k])
            folder = fuse_loras(model, [(p, 0.6) for p in loras[:k]], work / f"fused{k}")
            runs[(k, "fused")] = GenerationSession(folder)
    times: dict = {key: [] for key in runs}
    diff: dict = {}
    for r in range(repeats + 1):
        images = {}
        for key, session in runs.items():
            tick = time.perf_counter()
            images[key] = np.asarray(session.generate(request)[0].image, dtype=np.int16)
            if r:
                times[key].append(time.perf_counter() - tick)
        for k in ks:
            if k:
                diff[k] = int(np.abs(images[(k, "fused")] - images[(k, "unfused")]).max())
    return {key: _ms(t) for key, t in times.items()}, diff


def _ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


# ---------------------------------------------------------------------- report
def report(title: str, model: Path, loras: list[Path], args) -> None:
    from lora_studio.core.generate.session import GenerationSession

    size = GenerationSession(model).default_size()
    print(f"\n== {title}: {size[0]}x{size[1]} px, {len(loras)} LoRAs stacked, "
          f"median of {args.repeats} (after 1 warm-up)")
    slider, same = slider_moves(model, loras, args.repeats)
    fast_apply, fast_total = slider["scales only"]
    print("(i) slider move -> new preview (12 steps, DPM++ 2M)")
    print(f"    {'':14s} {'apply ms':>10s} {'total ms':>10s} {'total / scales only':>21s}")
    for name, (apply_ms, total_ms) in slider.items():
        print(f"    {name:14s} {apply_ms:10.2f} {total_ms:10.1f} {total_ms / fast_total:20.2f}x")
    print(f"    apply alone: set_adapters / scales only = "
          f"{slider['set_adapters'][0] / fast_apply:.0f}x, reload / scales only = "
          f"{slider['reload'][0] / fast_apply:.0f}x; same pixels in all three: {same}")
    ks = [0, 1, 2, 4] if len(loras) >= 4 else list(range(len(loras) + 1))
    with tempfile.TemporaryDirectory() as work:
        gen, diff = fused_vs_unfused(model, loras, ks, args.repeats, Path(work))
    base = gen[(0, "base")]
    print("(ii) generation (20 steps, Euler a): k LoRAs unfused vs fused")
    print(f"    {'k':>2s} {'unfused ms':>11s} {'fused ms':>9s} {'unfused/base':>13s} "
          f"{'fused/base':>11s} {'max |fused - unfused| px':>25s}")
    for k in ks:
        if k == 0:
            print(f"    {0:2d} {base:11.1f} {base:9.1f} {1.0:12.2f}x {1.0:10.2f}x {'-':>25s}")
            continue
        unfused, fused = gen[(k, "unfused")], gen[(k, "fused")]
        print(f"    {k:2d} {unfused:11.1f} {fused:9.1f} {unfused / base:12.2f}x "
              f"{fused / base:10.2f}x {diff[k]:25d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--stack", type=int, default=4, help="LoRAs loaded (at least 4 for k=4)")
    parser.add_argument("--sd15", action="store_true",
                        help="also an SD 1.5-shaped random model (reduced width)")
    parser.add_argument("--sd15-size", type=int, default=256, help="its native size in px")
    parser.add_argument("--no-tiny", action="store_true", help="skip the Tiny Shapes model")
    args = parser.parse_args()
    import torch

    from lora_studio.core.models.loading import resolve_model

    print(f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; times are wall-clock on this machine "
          "(if it is shared with other jobs, read the ratios, not the ms)")
    with tempfile.TemporaryDirectory() as home:
        os.environ["LORA_STUDIO_HOME"] = home
        work = Path(home)
        if not args.no_tiny:
            tiny = Path(resolve_model(None).path)
            report("Tiny Shapes (built-in)", tiny,
                   make_loras(tiny, work / "tiny_loras", args.stack), args)
        if args.sd15:
            sd15 = make_sd15_shaped(work / "sd15-shaped", args.sd15_size)
            report("SD 1.5-shaped (random, reduced width)", sd15,
                   make_loras(sd15, work / "sd15_loras", args.stack), args)


if __name__ == "__main__":
    main()
