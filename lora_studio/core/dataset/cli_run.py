"""`lora-studio dataset check | preview`: the dataset as training will use it.

Both read the same settings as `lora-studio train`: a config (`--config`, the [dataset] and
[train] sections) with `--set section.key=value` overrides, and DIR for dataset.path; without a
config, a new config's defaults (buckets on, 512 px). So `dataset check` prints the plan the
trainer prints (folders, repeats, buckets, steps per epoch, upscaled images, long captions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXIT_USABLE, EXIT_NOTHING_USABLE = 0, 1


def add_dataset_settings(parser: argparse.ArgumentParser) -> None:
    """The arguments `check` and `preview` share."""
    parser.add_argument("dir", type=Path, nargs="?", default=None,
                        help="image folder or kohya folder (default: the config's dataset.path)")
    parser.add_argument("--config", type=Path, help="training config (TOML) to read settings from")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    parser.add_argument("--caption-extension", help="dataset.caption_extension (default .txt)")
    parser.add_argument("--resolution", type=int, help="dataset.resolution (default 512)")
    parser.add_argument("--default-caption", help="dataset.default_caption")
    parser.add_argument("--trigger-word", help="dataset.trigger_word")
    parser.add_argument("--batch-size", type=int, help="train.batch_size (default 1)")


def config_for(args: argparse.Namespace):
    """The TrainConfig `args` describe (validated)."""
    from lora_studio.core.train.config import TrainConfig, apply_overrides, load_config

    cfg = load_config(args.config) if args.config else TrainConfig()
    overrides = list(args.overrides)
    for key, value in (("dataset.caption_extension", args.caption_extension),
                       ("dataset.resolution", args.resolution),
                       ("dataset.default_caption", args.default_caption),
                       ("dataset.trigger_word", args.trigger_word),
                       ("train.batch_size", args.batch_size)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.dir is not None:
        overrides.append(f"dataset.path={args.dir}")
        cfg.dataset.subsets = []  # a folder on the command line replaces listed ones
    return apply_overrides(cfg, overrides)


def run_check(args: argparse.Namespace) -> int:
    from lora_studio.core.dataset.plan import format_plan, plan_from_config

    plan = plan_from_config(config_for(args))
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
    return EXIT_USABLE if plan.report.usable else EXIT_NOTHING_USABLE


def run_preview(args: argparse.Namespace) -> int:
    from lora_studio.core.dataset.plan import plan_from_config
    from lora_studio.core.dataset.preview import seen_samples_from_config, write_seen_samples

    cfg = config_for(args)
    if args.seed is not None:
        cfg.train.seed = args.seed
    plan = plan_from_config(cfg, check_captions=False)
    if not plan.report.usable:
        print("Nothing usable to preview: run `lora-studio dataset check` to see why.")
        return EXIT_NOTHING_USABLE
    images = [Path(p) for p in args.image] if args.image else None
    samples = seen_samples_from_config(cfg, epoch=args.epoch - 1, images=images, plan=plan)
    written = write_seen_samples(samples, args.out)
    for sample in samples:
        print(sample.describe())
    print(f"Wrote {len(written)} files for {len(samples)} images to {args.out} "
          f"(seed {cfg.train.seed}, epoch {args.epoch}).")
    return EXIT_USABLE
