"""`lora-studio memory CONFIG.toml [--set KEY=VALUE ...]`: the peak GPU memory a training
config would need, part by part, and which settings would lower it most.

The model's architecture comes from its configs (`models.loading.resolve_model` reads configs
and file headers only, never weights); the buckets from the dataset plan when the dataset can
be read (otherwise the config's bucket table, said so).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("memory", help="estimate the peak GPU memory of a training config "
                       "(before training) and what would lower it")
    p.add_argument("config", type=Path, help="training config (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.set_defaults(handler=run_memory)


def dataset_buckets(cfg) -> tuple[list[tuple[int, int]] | None, str]:
    """The bucket of every dataset image (None when the dataset cannot be read) and a line
    saying where the buckets came from."""
    from lora_studio.core.dataset.plan import plan_from_config
    from lora_studio.core.errors import StudioError

    try:
        plan = plan_from_config(cfg, check_captions=False)
    except (StudioError, OSError) as exc:
        what = exc.what if isinstance(exc, StudioError) else str(exc)
        return None, f"Dataset not read ({what.splitlines()[0]}): assuming the largest " \
                     "bucket of the config's settings and 8 images in it."
    if not plan.fits:
        return None, "The dataset has no usable images: assuming the config's largest bucket."
    return [fit.bucket for fit in plan.fits], f"Buckets of the {len(plan.fits)} dataset images."


def estimate_for_config(cfg) -> tuple[Any, list[str], str, str]:
    """(estimate, advice, model name, where the buckets came from) for a loaded config."""
    from lora_studio.core.models.loading import resolve_model
    from lora_studio.core.train.memory import estimate_memory, lower_memory_advice

    source = resolve_model(cfg.model.base or None)
    buckets, origin = dataset_buckets(cfg)
    estimate = estimate_memory(cfg, source.arch, buckets, model=source)
    advice = lower_memory_advice(cfg, source.arch, buckets, model=source)
    return estimate, advice, source.name, origin


def format_estimate(estimate, advice: list[str], model: str, origin: str) -> list[str]:
    from lora_studio.core.models.architecture import ARCH_DISPLAY
    from lora_studio.core.train.memory import format_bytes

    w, h = estimate.bucket
    lines = [f"Peak GPU memory for {model} ({ARCH_DISPLAY.get(estimate.arch, estimate.arch)}), "
             f"largest bucket {w}x{h}, batch {estimate.batch_size}, "
             f"{estimate.weight_dtype} weights (an estimate, on a CUDA GPU):", f"  {origin}"]
    lines += [f"  {name:<22} {format_bytes(value):>10}" for name, value in estimate.parts().items()]
    lines.append(f"  {'total':<22} {format_bytes(estimate.total):>10}  (weights + LoRA + "
                 "optimizer + max(gradients + activations + recompute, encoding) + overhead)")
    lines += [f"  note: {note}" for note in estimate.notes]
    lines.append("To lower it:" if advice else "Nothing in the config would lower it much.")
    lines += [f"  - {line}" for line in advice]
    return lines


def run_memory(args: argparse.Namespace) -> int:
    from lora_studio.core.train.config import load_config

    cfg = load_config(args.config, args.overrides)
    estimate, advice, model, origin = estimate_for_config(cfg)
    if args.json:
        print(json.dumps({"arch": estimate.arch, "model": model, "bucket": list(estimate.bucket),
                          "batch_size": estimate.batch_size,
                          "weight_dtype": estimate.weight_dtype,
                          "parts": estimate.parts(), "total": estimate.total,
                          "lora_parameters": estimate.lora_parameter_count,
                          "notes": estimate.notes, "advice": advice, "buckets": origin},
                         indent=2))
    else:
        print("\n".join(format_estimate(estimate, advice, model, origin)))
    return 0
