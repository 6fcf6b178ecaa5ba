"""`lora-studio advise DIR --concept style|subject|concept`: advised rank, alpha and steps.

The dataset is checked as `lora-studio dataset check` checks it (the same settings: DIR, or a
`--config` with `--set` overrides), so the image count and the images per epoch (kohya `N_name`
folder repeats and `dataset.repeats` included) are what training will use. The base model's
architecture comes from `--arch`, else `--model` or the config's `[model] base` (its configs or
file header are read, not its weights), else SD 1.x (the built-in Tiny Shapes model's shape).
`--format toml` / `set` prints the values ready to paste into a config or a command line.
"""

from __future__ import annotations

import argparse
import json

from lora_studio.core.dataset.cli_run import EXIT_NOTHING_USABLE, EXIT_USABLE

FORMATS = ("text", "toml", "set", "json")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `advise` on the top-level command parser."""
    from lora_studio.core.dataset.cli_run import add_dataset_settings
    from lora_studio.core.models.architecture import ARCHITECTURES
    from lora_studio.core.train.advisor import CONCEPT_ALIASES, CONCEPTS

    p = sub.add_parser("advise", help="advised LoRA rank, alpha and steps for a dataset, with "
                       "the rules behind them")
    add_dataset_settings(p)
    p.add_argument("--concept", required=True, choices=[*CONCEPTS, *CONCEPT_ALIASES],
                   help="what the LoRA teaches: a style; a subject (one person, character or "
                   "object); a concept (a pose, an action, a bigger shift)")
    p.add_argument("--arch", choices=ARCHITECTURES, help="base model family (default: that of "
                   "--model or the config's model, else sd1)")
    p.add_argument("--model", help="base model to read the architecture from (a diffusers "
                   "folder, a checkpoint file, a cached hub id)")
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default), toml "
                   "(sections to paste into a config), set (--set arguments) or json")
    p.set_defaults(handler=run_advise)


def run_advise(args: argparse.Namespace) -> int:
    from lora_studio.core.dataset.cli_run import config_for
    from lora_studio.core.dataset.plan import check_from_config
    from lora_studio.core.train.advisor import advise, format_advice

    cfg = config_for(args)
    report = check_from_config(cfg)
    if not report.usable:
        print("Nothing usable to advise on: run `lora-studio dataset check` to see why.")
        return EXIT_NOTHING_USABLE
    arch, assumed = architecture_for(args, cfg)
    advice = advise(report.usable, args.concept, arch, images_per_epoch=report.images_per_epoch,
                    current=cfg)
    if args.format == "toml":
        print(advice.to_toml(), end="")
    elif args.format == "set":
        print(" ".join(f"--set {item}" for item in advice.overrides()))
    elif args.format == "json":
        print(json.dumps(advice.to_dict(), indent=2))
    else:
        print(format_advice(advice, cfg if args.config else None))
        if assumed:
            print("Base model: none given, so SD 1.x was assumed (give --arch or --model).")
        print("Use it: " + " ".join(f"--set {item}" for item in advice.overrides()))
    return EXIT_USABLE


def architecture_for(args: argparse.Namespace, cfg) -> tuple[str, bool]:
    """(architecture, whether it was assumed): --arch, else that of --model or the config's
    base model, else "sd1"."""
    from lora_studio.core.models.loading import BUILTIN_NAMES

    if args.arch:
        return args.arch, False
    spec = (args.model or cfg.model.base or "").strip()
    if not spec or spec.lower() in BUILTIN_NAMES:
        return "sd1", not spec
    from lora_studio.core.models.loading import resolve_model

    return resolve_model(spec).arch, False
