"""`lora-studio <command>`: a thin command line over `lora_studio.core`.

Each command parses its arguments here and calls one core function; heavy imports (torch,
diffusers) happen inside the handlers so `lora-studio --help` is instant. Errors a person can fix
(`StudioError`) print as a message with what to do; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- make-tiny-model
def _add_make_tiny_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-tiny-model", help="write a tiny random-weight SD model (for tests)")
    p.add_argument("dir", type=Path, help="output folder (diffusers format)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same weights")
    p.add_argument("--arch", choices=["sd1", "sd2", "sdxl"], default="sd1")
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon")
    p.set_defaults(handler=_run_make_tiny_model)


def _run_make_tiny_model(args: argparse.Namespace) -> int:
    if args.arch == "sdxl":
        from lora_studio.core.models.tiny_sdxl import make_tiny_sdxl_model

        out = make_tiny_sdxl_model(args.dir, seed=args.seed, prediction_type=args.prediction_type)
    else:
        from lora_studio.core.models.tiny import make_tiny_model

        out = make_tiny_model(args.dir, seed=args.seed, prediction_type=args.prediction_type,
                              arch=args.arch)
    print(f"Tiny {args.arch} model written to {out}")
    return 0


# ---------------------------------------------------------------- dataset check
def _add_dataset(sub: argparse._SubParsersAction) -> None:
    from lora_studio.core.dataset.cli_run import (
        add_dataset_settings,
        add_tags_operations,
        run_check,
        run_doctor,
        run_preview,
        run_tags,
    )

    p = sub.add_parser("dataset", help="dataset tools")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    c = dsub.add_parser("check", help="what training will do with a folder: folders and "
                        "repeats, captions, skipped files, buckets, steps per epoch")
    add_dataset_settings(c)
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(handler=run_check)
    v = dsub.add_parser("preview", help="write the exact pixels and caption training uses for "
                        "each image (bucket, crop, flip, caption options, token cut)")
    add_dataset_settings(v)
    v.add_argument("--out", type=Path, required=True, help="folder to write the previews to")
    v.add_argument("--seed", type=int, help="train.seed (default: the config's, 42)")
    v.add_argument("--epoch", type=int, default=1, help="which epoch's draw (from 1)")
    v.add_argument("--image", action="append", help="only this image (repeatable)")
    v.set_defaults(handler=run_preview)
    d = dsub.add_parser("doctor", help="what to fix before training: duplicate and look-alike "
                        "images, hard crops, upscaled images, caption problems, tag counts")
    add_dataset_settings(d)
    d.add_argument("--json", action="store_true", help="print the findings as JSON")
    d.add_argument("--max-distance", type=int, default=None,
                   help="largest perceptual-hash distance (of 64 bits) that counts as a near "
                   "duplicate (default 8)")
    d.add_argument("--top-tags", type=int, default=20, help="tags to list (default 20)")
    d.set_defaults(handler=run_doctor)
    t = dsub.add_parser("tags", help="bulk tag edits on caption files: add, remove, replace, "
                        "trigger word, and which images lack a tag")
    add_dataset_settings(t, dir_required=True)
    add_tags_operations(t)
    t.set_defaults(handler=run_tags)


# ---------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA from a TOML config")
    p.add_argument("config", type=Path, help="training config (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    p.add_argument("--resume", type=Path, help="checkpoint folder to continue from")
    p.add_argument("--events-json", action="store_true", help="print one JSON object per event")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from lora_studio.core.train.cli_run import run_train_command

    return run_train_command(args.config, args.overrides, args.resume, args.events_json)


def _add_advise(sub: argparse._SubParsersAction) -> None:
    from lora_studio.core.train.advise_cli import add_parser

    add_parser(sub)


def _add_memory(sub: argparse._SubParsersAction) -> None:
    from lora_studio.core.train.memory_cli import add_parser

    add_parser(sub)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from lora_studio.core.serve.cli_run import add_parser

    add_parser(sub)


# ---------------------------------------------------------------- inspect
def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show what a LoRA file holds")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    from lora_studio.core.lora.inspect import format_inspection, inspect_lora

    info = inspect_lora(args.file)
    print(json.dumps(info.to_dict(), indent=2) if args.json else format_inspection(info))
    return 0


# ---------------------------------------------------------------- generate
def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate images with a base model and LoRAs")
    p.add_argument("--model", default=None, help="diffusers folder, hub id or checkpoint file "
                   "(default: the built-in tiny model)")
    p.add_argument("--lora", action="append", default=[],
                   metavar="FILE[:WEIGHT][:lbw=BLOCKS][:start=SHARE]",
                   help="a LoRA and its weight; repeat for several. `:lbw=` gives A1111 LoRA "
                        "Block Weight factors: a preset (ALL, NONE, INS, IND, INALL, MIDD, "
                        "OUTD, OUTS, OUTALL, ALL0.5, NO_TE, STYLE) or 17 numbers BASE,IN01,"
                        "IN02,IN04,IN05,IN07,IN08,MID,OUT03,...,OUT11. `:start=0.5` holds "
                        "the LoRA back for the first half of the steps")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--sampler", default="Euler a", help='A1111 name, e.g. "DPM++ 2M Karras"')
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(handler=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from lora_studio.core.generate.cli_run import run_generate_command

    return run_generate_command(args)


# ---------------------------------------------------------------- merge
def parse_weighted_path(spec: str) -> tuple[str, float]:
    """`FILE[:WEIGHT]` -> (file, weight). Splits on the last colon only when what follows is a
    number, so Windows paths (`C:\\loras\\a.safetensors:0.5`) work; the weight defaults to 1."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, 1.0


_LORA_SPEC_HELP = ("`:lbw=` gives A1111 LoRA Block Weight factors, baked in: a preset (ALL, NONE, "
                   "INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL, ALL0.5, NO_TE, STYLE) or 17 "
                   "numbers BASE,IN01,...,OUT11")


def _mix_items(specs: list[str], action: str) -> list[tuple]:
    """`FILE[:WEIGHT][:lbw=BLOCKS]` specs -> (path, weight, block weights) for merge / fuse."""
    from lora_studio.core.errors import StudioError
    from lora_studio.core.generate.cli_run import parse_lora_arg

    items = []
    for spec in specs:
        entry = parse_lora_arg(spec)
        if entry.start:
            raise StudioError(f"{spec}: start= is a render setting; {action} cannot bake it in.",
                              "Leave out :start= (the LoRA then acts from the first step).")
        items.append((entry.path, entry.weight, entry.block_weights))
    return items


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge LoRAs of any kind into one LoRA file (exactly, or "
                                     "re-ranked by SVD)")
    p.add_argument("inputs", nargs="+", metavar="FILE[:WEIGHT][:lbw=BLOCKS]",
                   help="LoRAs (plain, LoHa, LoKr, DoRA, full-difference) and their weights; "
                        + _LORA_SPEC_HELP)
    p.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--rank", type=int, default=None,
                     help="re-rank every module to at most this rank (SVD); default: exact "
                          "merge, which plain LoRAs allow (LyCORIS kinds need --rank or --keep)")
    how.add_argument("--keep", type=float, default=None,
                     help="instead of --rank: per module the smallest rank keeping this share "
                          "of the update (e.g. 0.99)")
    p.add_argument("--model", default=None,
                   help="the base model the LoRAs are for: needed for DoRA files; block weights "
                        "are mapped on its UNet (default: the standard UNet of the LoRAs' "
                        "architecture)")
    p.add_argument("--format", choices=["kohya", "diffusers"], default="kohya",
                   help="key layout of the output (default: kohya, for A1111/ComfyUI/Forge)")
    p.add_argument("--title", default=None, help="name stored in the file's metadata")
    p.set_defaults(handler=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from lora_studio.core.lora.card import save_lora_with_card
    from lora_studio.core.lora.merge import merge_loras

    items = _mix_items(args.inputs, "a merge")
    result = merge_loras(items, rank=args.rank, keep=args.keep, title=args.title,
                         model=args.model)
    shares = result.input_retained or [None] * len(result.sources or [])
    for (name, weight, count), share in zip(result.sources or [], shares):
        kept = "" if share is None else f", kept {100 * share:.2f}% of its update"
        print(f"{name}: weight {weight:g}, {count} modules{kept}")
    for note in result.notes:
        print(f"note: {note}")
    out, note = save_lora_with_card(result.lora, args.out, layout=args.format,
                                    sources=[item[0] for item in items])
    if note:
        print(note)
    lora = result.lora
    print(f"Merged {len(lora.modules)} modules (rank {lora.metadata['ss_network_dim']}) "
          f"into {out}")
    if result.overall_retained is not None:
        print(f"Retained {100 * result.overall_retained:.2f}% of the update "
              "(share of squared Frobenius norm)")
        print("Least retained modules:")
        for name, share in result.worst_modules(5):
            print(f"  {100 * share:6.2f}%  {name}")
    return 0


def _add_resize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resize", help="change a LoRA's rank by SVD (strength preserved); a "
                                      "LyCORIS file becomes a plain LoRA")
    p.add_argument("input", type=Path)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--rank", type=int, help="the new rank of every module")
    how.add_argument("--keep", type=float,
                     help="per module, the smallest rank keeping this share (e.g. 0.95)")
    p.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    p.add_argument("--format", choices=["kohya", "diffusers"], default="kohya")
    p.add_argument("--model", default=None,
                   help="the base model the LoRA is for (needed for a DoRA file)")
    p.set_defaults(handler=_run_resize)


def _run_resize(args: argparse.Namespace) -> int:
    from lora_studio.core.lora.card import save_lora_with_card
    from lora_studio.core.lora.resize import resize_lora

    result = resize_lora(args.input, rank=args.rank, keep=args.keep, model=args.model)
    out, note = save_lora_with_card(result.lora, args.out, layout=args.format,
                                    sources=[args.input])
    if note:
        print(note)
    ranks = sorted(result.lora.ranks)
    shown = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]} (per module)"
    print(f"Wrote {out}: rank {shown}, kept {100 * result.overall_retained:.2f}% of the update "
          "(share of squared Frobenius norm)")
    for name, share in result.worst_modules(3):
        print(f"  {100 * share:6.2f}%  {name}")
    return 0


def _add_grid(sub: argparse._SubParsersAction) -> None:
    from lora_studio.core.generate.grid_cli import add_parser

    add_parser(sub)


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help="bake LoRAs into a base model (checkpoint or folder)")
    p.add_argument("--model", default=None, help="base model (default: the built-in one)")
    p.add_argument("--lora", action="append", required=True,
                   metavar="FILE[:WEIGHT][:lbw=BLOCKS]",
                   help="a LoRA of any kind and its weight; repeat for several. "
                        + _LORA_SPEC_HELP)
    p.add_argument("--out", type=Path, required=True,
                   help="OUT.safetensors: a single-file checkpoint (A1111, ComfyUI); "
                        "otherwise a diffusers folder")
    p.set_defaults(handler=_run_fuse)


def _run_fuse(args: argparse.Namespace) -> int:
    from lora_studio.core.lora.fuse import fuse_loras

    items = _mix_items(args.lora, "fuse")
    out = fuse_loras(args.model, items, args.out)
    print(f"Fused {len(items)} LoRA(s) into {out}")
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="re-save a LoRA in kohya or diffusers layout")
    p.add_argument("input", type=Path, help="a LoRA .safetensors file (any supported layout)")
    p.add_argument("--format", choices=["kohya", "diffusers"], required=True,
                   help="kohya: A1111/ComfyUI/Forge; diffusers: diffusers/PEFT")
    p.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    p.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from lora_studio.core.lora.convert import convert_lora

    out = convert_lora(args.input, args.out, layout=args.format)
    print(f"Wrote {out} ({args.format} layout)")
    return 0


# ---------------------------------------------------------------- screenshot
def _add_screenshot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("screenshot", help="grab every tab of the studio to PNG (offscreen)")
    p.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    p.add_argument("--dataset", type=Path, default=None,
                   help="dataset folder to show (default: the shipped sample dataset)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps of the main LoRA (default 40, a quick look; the README's "
                        "pictures use 1500, the quickstart's, so its previews show the star)")
    p.add_argument("--workbench", type=Path, default=None, metavar="DATASET",
                   help="instead: the Dataset tab's workbench and the Train tab's bucket table "
                        "for this (kohya) folder at 512 px, no training")
    p.set_defaults(handler=_run_screenshot)


def _run_screenshot(args: argparse.Namespace) -> int:
    from lora_studio.ui.screenshot import (SCREENSHOT_STEPS, take_screenshots,
                                           take_workbench_screenshots)

    if args.workbench is not None:
        paths = take_workbench_screenshots(args.out, args.workbench)
    else:
        paths = take_screenshots(args.out, args.dataset, args.steps or SCREENSHOT_STEPS)
    for path in paths:
        print(path)
    return 0


# ---------------------------------------------------------------- install-desktop
def _add_install_desktop(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install-desktop", help="add LoRA Studio to your desktop's menu (Linux: "
                       "a .desktop entry and icon for this user, starting this install)")
    p.add_argument("--remove", action="store_true", help="remove the entry and icon again")
    p.set_defaults(handler=_run_install_desktop)


def _run_install_desktop(args: argparse.Namespace) -> int:
    from lora_studio.core.desktop import install_desktop_entry, remove_desktop_entry

    change = remove_desktop_entry() if args.remove else install_desktop_entry()
    for path in change.written:
        print(f"Wrote {path}")
    for path in change.removed:
        print(f"Removed {path}")
    for note in change.notes:
        print(f"Note: {note}")
    return 0


# ---------------------------------------------------------------- tiny-shapes
def _add_tiny_shapes(sub: argparse._SubParsersAction) -> None:
    from lora_studio.core.models.tiny_shapes.cli_run import add_parser

    add_parser(sub)


# ---------------------------------------------------------------- main
_COMMANDS = [_add_make_tiny_model, _add_tiny_shapes, _add_dataset, _add_train, _add_inspect,
             _add_generate, _add_merge, _add_resize, _add_fuse, _add_grid, _add_convert,
             _add_screenshot, _add_advise, _add_memory, _add_install_desktop, _add_serve]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-studio",
        description="Train, mix and generate with Stable Diffusion LoRAs. "
        "With no command, opens the studio window.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return _open_app()
    from lora_studio.core.errors import StudioError

    if not args.debug:
        from lora_studio.core.quiet import quiet_libraries

        quiet_libraries()
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a reader that went away (`| head`) is found here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except StudioError as exc:
        print(f"error: {exc.user_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected bug: short message, traceback on request
        if args.debug or os.environ.get("LORA_STUDIO_DEBUG"):
            traceback.print_exc()
        else:
            print(f"error: unexpected {type(exc).__name__}: {exc}\n"
                  "Run again with --debug for the full traceback, and please report it.",
                  file=sys.stderr)
        return 1


def _reader_gone() -> int:
    """Whoever read our output closed it (`lora-studio dataset check DIR | head`): stop
    quietly, as a Unix tool killed by SIGPIPE would (status 141), with nothing left to flush."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def _open_app() -> int:
    try:
        from lora_studio.ui.app import run_app
    except ImportError:
        print("The studio window is not available in this build; see `lora-studio --help` "
              "for the command line.", file=sys.stderr)
        return 1
    return run_app()
