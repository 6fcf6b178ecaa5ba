"""Benchmark: LoRA training speed and memory of the studio's trainer on a CUDA GPU (SD 1.5, SDXL).

GPU (~6 min on an H100):  HF_HUB_OFFLINE=1 python tests/benchmarks/gpu_train.py --out bench.md
CPU smoke test (tiny models, 64 px, 3 steps a case):  python tests/benchmarks/gpu_train.py --smoke
Full-size model build only:  python tests/benchmarks/gpu_train.py --build-only --cases sd15

Nothing is downloaded. Each full-size model is built once with random weights from the shipped
configs (resources/configs/sd15, sdxl), saved in fp16 as a diffusers folder, and trained through
the public API (`config_from_dict` + `run_training_job`) on 8 generated captioned images at
512 px (SD 1.5) or 1024 px (SDXL). Every case runs in a fresh subprocess, so its peak memory and
CUDA state are its own; a failing case (OOM, missing package) prints its error and the rest go
on. Per case: it/s (median step interval after warm-up), samples/s, its speed relative to the
family's first case, peak VRAM (torch.cuda.max_memory_allocated) in the training loop and over
the whole run (load + caching), set-up and wall time, beside published anchors. Attention is
diffusers' default on torch 2, AttnProcessor2_0 (torch.nn.functional.scaled_dot_product_attention);
the UNet's processor class is read from the trainer's model and printed. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gpu_train_report import anchor_text, fmt, print_summary, write_report  # beside this file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

GIB = 1024 ** 3
RESOLUTION = {"sd15": 512, "sdxl": 1024}
RESULT_TAG = "GPU_TRAIN_RESULT "


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # "sd15" | "sdxl"
    precision: str  # train.mixed_precision: "no" | "fp16" | "bf16"
    checkpointing: bool = False
    cache: bool = True  # train.cache_latents (latents + caption embeddings)
    optimizer: str = "adamw"  # "adamw" | "adamw8bit"
    fallback_adamw: bool = False  # adamw8bit where bitsandbytes is available, else adamw

    def settings(self) -> str:
        gc, nocache = " gc" if self.checkpointing else "", "" if self.cache else " nocache"
        precision = "fp32" if self.precision == "no" else self.precision
        return f"{precision}{gc}{nocache} {self.optimizer}"


_XL = {"family": "sdxl", "optimizer": "adamw8bit", "fallback_adamw": True}
CASES = [
    Case("sd15-fp16", "sd15", "fp16"),
    Case("sd15-bf16", "sd15", "bf16"),
    Case("sd15-fp16-gc", "sd15", "fp16", checkpointing=True),
    Case("sd15-fp16-nocache", "sd15", "fp16", cache=False),
    Case("sd15-fp16-8bit", "sd15", "fp16", optimizer="adamw8bit"),
    Case("sdxl-bf16", precision="bf16", **_XL),
    Case("sdxl-bf16-gc", precision="bf16", checkpointing=True, **_XL),
    Case("sdxl-fp16", precision="fp16", **_XL),
    Case("sdxl-fp16-gc", precision="fp16", checkpointing=True, **_XL),
]


def select_cases(patterns: str) -> list[Case]:
    """`--cases`: comma-separated names, globs (`sdxl-*`) or prefixes (`sd15`)."""
    pats, names = [p.strip() for p in patterns.split(",") if p.strip()], {c.name for c in CASES}
    return [c for c in CASES if any(fnmatch.fnmatch(c.name, p)
                                    or (p not in names and c.name.startswith(p)) for p in pats)]


def adapt_case(case: Case, cuda: bool, has_bnb: bool) -> tuple[Case | None, str]:
    """The case as this machine can run it (None: skipped), and a note saying what changed."""
    notes = []
    if case.optimizer == "adamw8bit" and not (cuda and has_bnb):
        why = "needs CUDA" if not cuda else "needs bitsandbytes (not installed)"
        if not case.fallback_adamw:
            return None, f"skipped: adamw8bit {why}"
        case = replace(case, optimizer="adamw")
        notes.append(f"adamw: adamw8bit {why}")
    if not cuda and case.precision != "no":
        notes.append(f"{case.precision} needs CUDA: ran in fp32")
        case = replace(case, precision="no")
    return case, "; ".join(notes)


# ------------------------------------------------------------------------------ models, data
def build_full_model(family: str, out_dir: Path, device: str) -> Path:
    """A full-size random-weight model from the shipped configs, saved in fp16 (diffusers)."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                              CLIPTokenizer)

    from lora_studio.core.models.tiny import save_pipeline_folder
    from lora_studio.core.paths import configs_dir

    src = configs_dir() / family
    torch.manual_seed(0)

    def make(build):  # random init where it is fast (the GPU), then fp16 on the CPU for saving
        with torch.device(device):
            return build().to(device="cpu", dtype=torch.float16)

    parts = {
        "unet": make(lambda: UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(src / "unet"))),
        "vae": make(lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(src / "vae"))),
        "text_encoder": make(lambda: CLIPTextModel(
            CLIPTextConfig.from_pretrained(src / "text_encoder"))),
        "tokenizer": CLIPTokenizer.from_pretrained(src / "tokenizer"),
    }
    sched = json.loads((src / "scheduler" / "scheduler_config.json").read_text())
    parts["scheduler"] = getattr(diffusers, sched["_class_name"]).from_config(sched)
    if family == "sdxl":
        parts["text_encoder_2"] = make(lambda: CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(src / "text_encoder_2")))
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(src / "tokenizer_2")
        pipe = diffusers.StableDiffusionXLPipeline(**parts)
    else:
        pipe = diffusers.StableDiffusionPipeline(**parts, safety_checker=None,
                                                 feature_extractor=None,
                                                 requires_safety_checker=False)
    save_pipeline_folder(pipe, out_dir)
    del pipe, parts
    if device == "cuda":
        torch.cuda.empty_cache()  # the cases run in subprocesses: leave them the memory
    return out_dir


def get_model(family: str, models: Path, smoke: bool, device: str) -> Path:
    """The model folder of `family` (tiny in smoke mode), built unless already there."""
    from lora_studio.core.models.tiny import make_tiny_model
    from lora_studio.core.models.tiny_sdxl import make_tiny_sdxl_model

    target = models / f"{family}-{'tiny' if smoke else 'full'}"
    if (target / "model_index.json").is_file():
        return target
    if not smoke:
        return build_full_model(family, target, device)
    return make_tiny_sdxl_model(target) if family == "sdxl" else make_tiny_model(target)


def prepare_models(families: list[str], folder: Path, smoke: bool,
                   cuda: bool) -> dict[str, Path | str]:
    """Each family's model folder, or the line saying why it could not be built."""
    models: dict[str, Path | str] = {}
    for family in families:
        tick = time.perf_counter()
        try:
            models[family] = path = get_model(family, folder, smoke, "cuda" if cuda else "cpu")
        except Exception as exc:  # its cases are reported as skipped with this line
            models[family] = f"model build failed: {type(exc).__name__}: {exc}"
            print(f"model {family}: {models[family]}", flush=True)
            continue
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / GIB
        print(f"model {family}: {path} ({size:.2f} GiB, ready in "
              f"{time.perf_counter() - tick:.0f} s)", flush=True)
    return models


def make_dataset(folder: Path, resolution: int, count: int = 8) -> Path:
    """`count` generated pictures (a shape on a gradient) with .txt captions, made once."""
    import random

    from PIL import Image, ImageDraw

    if (folder / f"img{count - 1:02d}.txt").is_file():
        return folder  # made for an earlier case
    folder.mkdir(parents=True, exist_ok=True)
    rng, side = random.Random(resolution), resolution
    colors = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 180, 70)}
    for i in range(count):
        mask = Image.linear_gradient("L").resize((side, side))
        top, bottom = (Image.new("RGB", mask.size, tuple(rng.choices(range(256), k=3)))
                       for _ in range(2))
        image = Image.composite(top, bottom, mask)
        name, shape = rng.choice(list(colors)), rng.choice(["circle", "square"])
        x, y = rng.randrange(side // 2), rng.randrange(side // 2)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "circle" else draw.rectangle)(
            (x, y, x + side // 3, y + side // 3), fill=colors[name])
        image.save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"bnchmrk, a {name} {shape} on a gradient")
    return folder


# ------------------------------------------------------------------------------ one case (child)
def run_case(spec: dict) -> dict:
    """Train one case in this process and return its measurements (runs in a subprocess)."""
    import torch

    import lora_studio.core.train.families as families
    from lora_studio.core import events as ev
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.train.config import config_from_dict
    from lora_studio.core.train.trainer import run_training_job

    cuda, case = torch.cuda.is_available(), Case(**spec["case"])
    load_family, seen = families.load_family, {}

    def spy_load_family(*args, **kwargs):  # only reads which attention processors the UNet has
        family = load_family(*args, **kwargs)
        seen["processors"] = sorted({type(p).__name__
                                     for p in family.denoiser.attn_processors.values()})
        return family

    families.load_family = spy_load_family  # trainer.train imports it when it runs
    cfg = config_from_dict({
        "model": {"base": spec["model"]},
        "dataset": {"path": spec["data"], "resolution": spec["resolution"]},
        "lora": {"rank": spec["rank"], "alpha": float(spec["rank"]), "targets": spec["targets"]},
        "train": {"steps": spec["steps"], "batch_size": spec["batch"], "learning_rate": 1e-4,
                  "device": "cuda" if cuda else "cpu", "mixed_precision": case.precision,
                  "gradient_checkpointing": case.checkpointing, "cache_latents": case.cache,
                  "optimizer": case.optimizer},
        "output": {"path": spec["output"], "name": case.name},
    })
    start, stamps, got = time.perf_counter(), [], {"error": None, "peak_load": 0, "peak": 0}

    def emit(event):
        if isinstance(event, (ev.JobStarted, ev.StepProgress)):
            if cuda:
                torch.cuda.synchronize()  # (the trainer's loss.item() has synced already)
                if isinstance(event, ev.JobStarted):  # loading + caching done: loop peak next
                    got["peak_load"] = torch.cuda.max_memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                else:
                    got["peak"] = torch.cuda.max_memory_allocated()
            stamps.append(time.perf_counter())
            got["loss"] = getattr(event, "loss", None)
        elif isinstance(event, ev.Failed):
            got["error"] = (event.message or "failed").splitlines()[0]

    run_training_job(cfg, emit, JobControl())
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    steady = steps[spec["warmup"]:] or steps[-1:]
    it_s = 1.0 / statistics.median(steady) if steady else None
    return {"it_s": it_s, "samples_s": it_s * spec["batch"] if it_s else None,
            "steps_done": len(steps), "timed_steps": len(steady),
            "setup_s": stamps[0] - start if stamps else None,
            "peak_train_gib": got["peak"] / GIB if cuda and steps else None,
            "peak_all_gib": (max(got["peak_load"], torch.cuda.max_memory_allocated()) / GIB
                             if cuda else None),  # also when it failed (an OOM's size)
            "final_loss": got.get("loss"), "processors": seen.get("processors"),
            "error": got["error"]}


def child_main(spec_json: str) -> None:
    try:
        result = run_case(json.loads(spec_json))
    except Exception as exc:  # the case's error line; the parent goes on with the next case
        result = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    print(RESULT_TAG + json.dumps(result), flush=True)


def spawn_case(spec: dict, timeout: float, home: str) -> dict:
    env = {**os.environ, "LORA_STUDIO_HOME": home, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    tick = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
        tail = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()] or ["no output"]
        result = (json.loads(found[-1][len(RESULT_TAG):]) if found
                  else {"error": f"exit code {proc.returncode}: {tail[-1]}"})
    except subprocess.TimeoutExpired:
        result = {"error": f"killed after {timeout:.0f} s (--case-timeout / --time-budget)"}
    return result | {"wall_s": time.perf_counter() - tick}


# ------------------------------------------------------------------------------ the run
def run_cases(cases: list[Case], args: argparse.Namespace, models: dict[str, Path | str],
              tmp: Path, cuda: bool, has_bnb: bool, deadline: float) -> list[dict]:
    """Run each case in its own subprocess, or say why it is skipped; return the table rows."""
    rows, done, first = [], {}, {}
    for n, case in enumerate(cases, 1):
        res = 64 if args.smoke else RESOLUTION[case.family]
        ran, note = adapt_case(case, cuda, has_bnb)
        row = {"case": case.name, "settings": (ran or case).settings(), "resolution": res,
               "note": note}
        rows.append(row)
        key, left = replace(ran, name="") if ran else None, deadline - time.perf_counter()
        if ran is None:
            pass
        elif isinstance(models[case.family], str):
            row["note"] = f"skipped: {models[case.family]}"
        elif key in done:  # e.g. fp16 and bf16 both become fp32 on the CPU
            row["note"] = f"skipped: same run as {done[key]} here ({note})"
        elif left <= 0:
            row["note"] = "skipped: --time-budget spent"
        else:
            done[key] = case.name
            spec = {"case": asdict(ran), "model": str(models[case.family]),
                    "data": str(make_dataset(tmp / f"data{res}", res)), "resolution": res,
                    "steps": args.steps, "warmup": args.warmup, "rank": args.rank,
                    "targets": args.targets, "batch": args.batch,
                    "output": str(tmp / "runs" / case.name)}
            print(f"[{n}/{len(cases)}] {case.name} ({row['settings']}, {res} px) ...",
                  end=" ", flush=True)
            row.update(spawn_case(spec, min(args.case_timeout, left + 60), str(tmp)))
            if row.get("it_s"):
                base = first.setdefault(case.family, row)
                row["x_first"] = row["it_s"] / base["it_s"]
            print(f"{fmt(row.get('it_s'), '.2f')} it/s, peak train "
                  f"{fmt(row.get('peak_train_gib'), '.2f')} GiB, {row['wall_s']:.0f} s"
                  + (f"  ERROR {row['error']}" if row.get("error") else ""), flush=True)
            continue
        print(f"[{n}/{len(cases)}] {case.name}: {row['note']}", flush=True)
    for row, case in zip(rows, cases):
        row["anchor"] = anchor_text(case.family, case.checkpointing, row, args.smoke)
    return rows


def environment(cuda: bool, has_bnb: bool) -> dict:
    import diffusers
    import torch

    env = {"torch": torch.__version__, "diffusers": diffusers.__version__,
           "device": torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA)",
           "bitsandbytes": "installed" if has_bnb else "missing (8-bit cases skipped / adamw)",
           "attention": "diffusers' default on torch 2: AttnProcessor2_0 = "
                        "torch.nn.functional.scaled_dot_product_attention (SDPA)"}
    if cuda:
        b = torch.backends.cuda
        env["sdpa backends enabled"] = (f"flash={b.flash_sdp_enabled()} mem_efficient="
                                        f"{b.mem_efficient_sdp_enabled()} math={b.math_sdp_enabled()}")
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny models, 64 px, fp32 (CPU check)")
    p.add_argument("--steps", type=int, default=None, help="steps per case (30; smoke 3)")
    p.add_argument("--warmup", type=int, default=None, help="steps not timed (5; smoke 1)")
    p.add_argument("--cases", default="*", help="names, globs or prefixes, comma-separated: "
                   + ", ".join(c.name for c in CASES))
    p.add_argument("--time-budget", type=float, default=480.0,
                   help="seconds (model builds included); cases not started by then are "
                        "skipped, a running one is stopped a minute later (0 = no limit)")
    p.add_argument("--case-timeout", type=float, default=240.0, help="seconds per case")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--targets", default="attention", help="lora.targets preset")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--models-dir", type=Path, help="keep / reuse built models here (else temp)")
    p.add_argument("--build-only", action="store_true",
                   help="build the full-size models of the selected cases' families and stop")
    p.add_argument("--out", type=Path, help="also write the table: .json, .md, or both")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (3 if args.smoke else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    args.warmup = max(0, min(warmup, args.steps - 1))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    import torch

    started, cuda = time.perf_counter(), torch.cuda.is_available()
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    cases = select_cases(args.cases)
    if not cases:
        sys.exit(f"--cases {args.cases!r} matches none of: {', '.join(c.name for c in CASES)}")
    if not (cuda or args.smoke or args.build_only):
        sys.exit("No CUDA GPU: full-size training on the CPU would take hours. Use --smoke "
                 "(tiny models) or --build-only.")
    deadline = started + (args.time_budget or float("inf"))
    with tempfile.TemporaryDirectory(prefix="gpu-train-bench-") as tmp:
        models = prepare_models(list(dict.fromkeys(c.family for c in cases)),
                                args.models_dir or Path(tmp) / "models", args.smoke, cuda)
        if args.build_only:  # check that the trainer's loader takes each folder, then stop
            from lora_studio.core.train.families import load_family

            for family, path in models.items():
                if isinstance(path, Path):
                    loaded = load_family(str(path), torch_dtype=torch.float16)
                    print(f"  {family}: loads as {loaded.source.arch!r} "
                          f"({type(loaded).__name__})")
            sys.exit(1 if any(isinstance(p, str) for p in models.values()) else 0)
        env = environment(cuda, has_bnb) | {
            "mode": "smoke (tiny models)" if args.smoke else "full-size, random weights",
            "steps": args.steps, "warm-up steps": args.warmup, "rank": args.rank,
            "targets": args.targets, "batch": args.batch}
        print("\n".join(f"{k}: {v}" for k, v in env.items()), flush=True)
        rows = run_cases(cases, args, models, Path(tmp), cuda, has_bnb, deadline)
    procs = sorted({p for r in rows for p in r.pop("processors", None) or []})
    env["unet attention processors (seen)"] = ", ".join(procs) or "-"
    env["total s"] = round(time.perf_counter() - started)
    print_summary(env, rows)
    if args.out:
        print("written: " + ", ".join(str(p) for p in write_report(args.out, env, rows)))


if __name__ == "__main__":
    main()
