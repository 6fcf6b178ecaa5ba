"""Benchmark: `lora-studio serve` request latency with hot-swapped LoRAs vs a full reload.

Run:  OMP_NUM_THREADS=1 python tests/benchmarks/serve_latency.py [--repeats 7] [--sd15]
                                                                 [--steps 4] [--device cpu]

One process; servers on free loopback ports, spoken to over HTTP (urllib) as a client would.
Each request is a txt2img with one `<lora:...:0.8>` tag at the model's native size, `--steps`
steps, Euler, seed 1234. The variants are interleaved in every repeat (a busy machine slows all
alike); the median of the repeats after one warm-up is printed, with its ratio to (a).

  (a) same adapter     the LoRA of the previous request again (loaded, switched on by the tag)
  (b) swap, loaded     another LoRA than the previous request's, both kept loaded by the pool
  (c) swap, load       another LoRA on a server whose pool keeps 1 (unload + load per request)
  (d) full reload      a new session per request: load the base model and the LoRA, then render
                       (in this process: Python's and diffusers' import time is not counted)
  (0) no LoRA          the bare base, for reference

On the built-in Tiny Shapes model and, with `--sd15`, a random-weight model with SD 1.5's layout
at reduced width (`mix_speed.make_sd15_shaped`). LoRAs: random kohya files, rank 8 (UNet attention
+ feed-forward, text encoder). Not collected by pytest; timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore", message="Already found a `peft_config`")

VARIANTS = ("(a) same adapter", "(b) swap, loaded", "(c) swap, load", "(d) full reload",
            "(0) no LoRA")


def start_server(model: Path, lora_dir: Path, device: str, max_loaded: int = 8):
    from lora_studio.core.generate.session import GenerationSession
    from lora_studio.core.serve.api import ServeApi
    from lora_studio.core.serve.library import AdapterPool, LoraLibrary
    from lora_studio.core.serve.server import ApiServer

    api = ServeApi(GenerationSession(model, device=device), LoraLibrary(lora_dir),
                   AdapterPool(max_loaded))
    server = ApiServer(api, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server) -> None:
    server.shutdown()
    server.server_close()


def txt2img(server, lora: str | None, steps: int) -> float:
    """Seconds for one request, as the client sees it."""
    prompt = "a red star on a blue background" + (f", <lora:{lora}:0.8>" if lora else "")
    body = json.dumps({"prompt": prompt, "steps": steps, "seed": 1234, "cfg_scale": 7,
                       "sampler_name": "Euler"}).encode()
    request = urllib.request.Request(server.url + "/sdapi/v1/txt2img", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.loads(response.read())
    elapsed = time.perf_counter() - started
    assert len(answer["images"]) == 1, answer
    return elapsed


def full_reload(model: Path, lora_dir: Path, device: str, steps: int) -> float:
    started = time.perf_counter()
    server = start_server(model, lora_dir, device)
    try:
        txt2img(server, "bench0", steps)
    finally:
        stop(server)
    return time.perf_counter() - started


def measure(model: Path, lora_dir: Path, args) -> dict[str, list[float]]:
    warm = start_server(model, lora_dir, args.device)  # pool of 8: bench0..bench1 stay loaded
    tight = start_server(model, lora_dir, args.device, max_loaded=1)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for repeat in range(args.repeats + 1):
            txt2img(warm, "bench0", args.steps)
            same = txt2img(warm, "bench0", args.steps)
            swap = txt2img(warm, "bench1", args.steps)
            txt2img(tight, "bench2", args.steps)
            load = txt2img(tight, "bench3", args.steps)
            reload = full_reload(model, lora_dir, args.device, args.steps)
            bare = txt2img(warm, None, args.steps)
            if repeat:  # the first round warms up
                for variant, value in zip(VARIANTS, (same, swap, load, reload, bare)):
                    times[variant].append(value)
            print(f"  repeat {repeat}/{args.repeats} done", file=sys.stderr, flush=True)
    finally:
        stop(warm)
        stop(tight)
    return times


def report(title: str, model: Path, lora_dir: Path, args) -> None:
    from lora_studio.core.generate.session import GenerationSession

    width, height = GenerationSession(model).default_size()
    print(f"\n{title}: {width}x{height}, {args.steps} steps, device {args.device}, "
          f"median of {args.repeats}")
    times = measure(model, lora_dir, args)
    base = statistics.median(times[VARIANTS[0]])
    print(f"  {'request':<20} {'median ms':>10} {'/ (a)':>7}")
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        print(f"  {variant:<20} {median * 1000:>10.0f} {median / base:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sd15", action="store_true",
                        help="also an SD 1.5-shaped random model (reduced width)")
    parser.add_argument("--sd15-size", type=int, default=256, help="its native size in px")
    parser.add_argument("--no-tiny", action="store_true", help="skip the Tiny Shapes model")
    args = parser.parse_args()
    import torch

    from mix_speed import make_loras, make_sd15_shaped

    from lora_studio.core.models.loading import resolve_model
    from lora_studio.core.quiet import quiet_libraries

    quiet_libraries()
    print(f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; times are wall-clock on this machine "
          "(if it is shared with other jobs, read the ratios, not the ms)")
    with tempfile.TemporaryDirectory() as home:
        os.environ["LORA_STUDIO_HOME"] = home
        work = Path(home)
        models = []
        if not args.no_tiny:
            models.append(("Tiny Shapes (built-in)", Path(resolve_model(None).path), "tiny"))
        if args.sd15:
            models.append(("SD 1.5-shaped (random, reduced width)",
                           make_sd15_shaped(work / "sd15-shaped", args.sd15_size), "sd15"))
        for title, model, key in models:
            loras = work / f"{key}_loras"
            make_loras(model, loras, 4)
            report(title, model, loras, args)


if __name__ == "__main__":
    main()
