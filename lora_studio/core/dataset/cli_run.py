"""`lora-studio dataset check | preview | doctor | tags`: the dataset as training will use it.

All read the same settings as `lora-studio train`: a config (`--config`, the [dataset] and
[train] sections) with `--set section.key=value` overrides, and DIR for dataset.path; without a
config, a new config's defaults (buckets on, 512 px). So `dataset check` prints the plan the
trainer prints (folders, repeats, buckets, steps per epoch, upscaled images, long captions),
`dataset doctor` what is worth fixing (duplicates, hard crops, caption problems, the tag
table), and `dataset tags` edits the captions of the images the check finds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Nothing usable makes the command impossible: 2, as for any input a person has to fix.
EXIT_USABLE, EXIT_NOTHING_USABLE = 0, 2


def add_dataset_settings(parser: argparse.ArgumentParser, *, dir_required: bool = False) -> None:
    """The arguments the dataset commands share (`dir_required`: DIR is not optional)."""
    if dir_required:
        parser.add_argument("dir", type=Path, help="image folder or kohya folder")
    else:
        parser.add_argument("dir", type=Path, nargs="?", default=None,
                            help="image folder or kohya folder (default: the config's "
                            "dataset.path)")
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


def run_doctor(args: argparse.Namespace) -> int:
    from lora_studio.core.dataset.doctor import (
        NEAR_DUPLICATE_DISTANCE,
        doctor_from_config,
        format_doctor,
    )

    distance = NEAR_DUPLICATE_DISTANCE if args.max_distance is None else args.max_distance
    if not 0 <= distance <= 64:
        from lora_studio.core.errors import StudioError

        raise StudioError(f"--max-distance {distance} is not between 0 and 64.",
                          f"Use a number of bits from 0 to 64 (default "
                          f"{NEAR_DUPLICATE_DISTANCE}).")
    report = doctor_from_config(config_for(args), max_distance=distance)
    print(json.dumps(report.to_dict(), indent=2) if args.json
          else format_doctor(report, top_tags=args.top_tags))
    return EXIT_USABLE if report.plan.report.usable else EXIT_NOTHING_USABLE


def add_tags_operations(parser: argparse.ArgumentParser) -> None:
    """`dataset tags DIR OPERATION ...`: one sub-command per operation."""
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--only", nargs="+", metavar="IMG", type=Path,
                           help="only these images (paths, or file names)")
    editing = argparse.ArgumentParser(add_help=False, parents=[selection])
    editing.add_argument("--dry-run", action="store_true",
                         help="print the changes, write nothing")
    ops = parser.add_subparsers(dest="tags_command", required=True, metavar="OPERATION")
    add = ops.add_parser("add", parents=[editing], help="append TAG to every caption")
    add.add_argument("tag")
    add.add_argument("--where-missing", action="store_true",
                     help="only where it is missing (without it, captions that already have "
                     "TAG are an error)")
    ops.add_parser("remove", parents=[editing], help="remove TAG").add_argument("tag")
    replace = ops.add_parser("replace", parents=[editing], help="replace OLD by NEW")
    replace.add_argument("old")
    replace.add_argument("new")
    ops.add_parser("trigger", parents=[editing], help="put WORD first where it is missing"
                   ).add_argument("word")
    ops.add_parser("missing", parents=[selection], help="list the images whose caption lacks "
                   "TAG (one path a line)").add_argument("tag")


def run_tags(args: argparse.Namespace) -> int:
    from lora_studio.core.dataset import tags
    from lora_studio.core.dataset.plan import check_from_config

    targets = tags.targets_from_report(check_from_config(config_for(args)))
    if args.only:
        targets = tags.select(targets, args.only, root=args.dir)
    if not targets:
        print("Nothing usable to edit: run `lora-studio dataset check` to see why.")
        return EXIT_NOTHING_USABLE
    op = args.tags_command
    if op == "missing":
        lacking = tags.missing_tag(targets, args.tag)
        for target in lacking:
            print(target.image_path)
        print(f"{len(lacking)} of {len(targets)} images lack {args.tag.strip()!r}.",
              file=sys.stderr)
        return EXIT_USABLE
    changes = {"add": lambda: tags.add_tag(targets, args.tag, where_missing=args.where_missing),
               "remove": lambda: tags.remove_tag(targets, args.tag),
               "replace": lambda: tags.replace_tag(targets, args.old, args.new),
               "trigger": lambda: tags.add_trigger(targets, args.word)}[op]()
    for change in changes:
        print(_describe_change(change))
    if args.dry_run:
        print(f"Dry run: {len(changes)} of {len(targets)} caption files would change; nothing "
              "was written.")
        return EXIT_USABLE
    tags.apply_changes(changes)
    created = sum(c.created for c in changes)
    print(f"Changed {len(changes)} of {len(targets)} caption files"
          f"{f' ({created} created)' if created else ''}.")
    return EXIT_USABLE


def _describe_change(change) -> str:
    notes = [note for flag, note in ((change.created, f'new file: "{change.new_text}"'),
                                     (change.converted, "was Windows-1252, written as UTF-8"))
             if flag]
    extra = f"  ({'; '.join(notes)})" if notes else ""
    removed, added = change.tag_diff()
    if not removed and not added:  # the same tags in another spelling
        return f'{change.path}: "{change.old_text}" -> "{change.new_text}"{extra}'
    tags = [f'-"{t}"' for t in removed] + [f'+"{t}"' for t in added]
    return f"{change.path}: {' '.join(tags)}{extra}"
