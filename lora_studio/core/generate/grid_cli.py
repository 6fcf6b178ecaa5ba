"""`lora-studio grid`: a labelled PNG of one or two LoRAs over lists of strengths, or (`--run`)
of the LoRAs one training run saved, one column per step.

    lora-studio grid --lora STYLE.safetensors --strengths 0,0.5,1 [--lora2 B --strengths2 ...]
                     --prompt "..." --out grid.png
    lora-studio grid --run OUTPUT_FOLDER [--strength 1] [--prompt P ...] --out steps.png

With `--run`, prompts, seed, steps, guidance and sampler default to the run's own preview
settings (its `<name>.toml`), so the grid shows the previews' pictures at every saved step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lora_studio.core.errors import StudioError

DEFAULTS = {"seed": 1234, "steps": 20, "cfg": 7.0, "sampler": "Euler a", "negative": ""}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="a labelled grid of LoRAs at several strengths, or of the "
                                    "steps one training run saved (--run)")
    p.add_argument("--model", default=None, help="base model (default: the built-in one)")
    p.add_argument("--lora", type=Path, default=None, help="the LoRA on the rows")
    p.add_argument("--strengths", default="0,0.25,0.5,0.75,1", help="its strengths, e.g. 0,0.5,1")
    p.add_argument("--lbw", default=None, metavar="BLOCKS",
                   help="block weights of the first LoRA (a preset such as OUTALL, or 17 "
                        "numbers), kept at every strength")
    p.add_argument("--lora2", type=Path, default=None, help="a second LoRA, on the columns")
    p.add_argument("--strengths2", default="0,0.5,1", help="the second LoRA's strengths")
    p.add_argument("--lbw2", default=None, metavar="BLOCKS", help="the second LoRA's")
    p.add_argument("--run", type=Path, default=None, metavar="OUTPUT_FOLDER",
                   help="instead of --lora: a training run's output folder; one column per "
                        "saved step (intermediate files, checkpoints, the final LoRA)")
    p.add_argument("--name", default=None, help="with --run: the LoRA's name, when the folder "
                                                "holds several runs")
    p.add_argument("--strength", type=float, default=1.0, help="with --run: the strength")
    p.add_argument("--prompt", action="append", default=None,
                   help="the prompt; with --run, repeat for one row per prompt (default: the "
                        "run's preview prompts)")
    p.add_argument("--negative", default=None)
    p.add_argument("--seed", type=int, default=None, help="default 1234 (--run: the run's)")
    p.add_argument("--steps", type=int, default=None, help="default 20 (--run: the run's)")
    p.add_argument("--cfg", type=float, default=None, help="default 7 (--run: the run's)")
    p.add_argument("--sampler", default=None, help="an A1111 sampler name (default Euler a)")
    p.add_argument("--out", type=Path, required=True, help="the grid PNG")
    p.set_defaults(handler=run_grid_command)


def run_grid_command(args: argparse.Namespace) -> int:
    """Run `lora-studio grid` with the parsed arguments; returns the exit code."""
    from lora_studio.core.errors import ConfigError

    if (args.lora is None) == (args.run is None):
        raise ConfigError("--lora", "give either --lora (a strength grid) or --run (a grid "
                          "over a run's saved steps)", "See lora-studio grid --help.")
    result = _run_grid(args) if args.run is not None else _strength_grid(args)
    _write(result.image, args.out)
    return 0 if result.complete else 130


def _request(args: argparse.Namespace, prompt: str, sample: dict | None = None):
    from lora_studio.core.generate.session import GenerationRequest

    sample = sample or {}
    own = {"seed": sample.get("seed"), "steps": sample.get("steps"), "cfg": sample.get("cfg"),
           "sampler": sample.get("sampler"), "negative": sample.get("negative_prompt")}
    value = {key: next(v for v in (getattr(args, key), own[key], default) if v is not None)
             for key, default in DEFAULTS.items()}
    return GenerationRequest(prompt, negative=value["negative"], steps=int(value["steps"]),
                             cfg=float(value["cfg"]), seed=int(value["seed"]),
                             sampler=str(value["sampler"]))


def _strength_grid(args: argparse.Namespace):
    from lora_studio.core.errors import ConfigError
    from lora_studio.core.generate.grid import GridAxis, parse_strengths, strength_grid
    from lora_studio.core.generate.session import GenerationSession
    from lora_studio.core.lora.block_weights import BlockWeights

    if not args.prompt or len(args.prompt) > 1:
        raise ConfigError("--prompt", "a strength grid takes one prompt",
                          'Give it once: --prompt "a red circle".')
    row_strengths = parse_strengths(args.strengths, "--strengths")  # bad input: before loading
    col_strengths = parse_strengths(args.strengths2, "--strengths2") if args.lora2 else None
    row_blocks = BlockWeights.parse(args.lbw) if args.lbw is not None else None
    col_blocks = BlockWeights.parse(args.lbw2) if args.lbw2 is not None else None
    session = GenerationSession(args.model)
    rows = GridAxis(session.add_lora(args.lora, block_weights=row_blocks).adapter_name,
                    row_strengths)
    cols = None
    if args.lora2 is not None:
        cols = GridAxis(session.add_lora(args.lora2, block_weights=col_blocks).adapter_name,
                        col_strengths)
    total = len(rows.strengths) * (len(cols.strengths) if cols else 1)
    return strength_grid(session, _request(args, args.prompt[0]), rows, cols,
                         cell_done=_counter(total))


def _run_grid(args: argparse.Namespace):
    from lora_studio.core import events
    from lora_studio.core.generate.run_grid import list_run, run_grid
    from lora_studio.core.generate.session import GenerationSession

    listing = list_run(args.run, args.name)
    print(listing.summary(), flush=True)
    prompts = args.prompt or [str(p) for p in listing.sample.get("prompts", [])]
    if not prompts:
        raise StudioError("The run's config has no preview prompts to render.",
                          'Give one: --prompt "your trigger word, ...".')
    model = args.model if args.model is not None else _run_base(listing)

    def log(event) -> None:
        if isinstance(event, events.Log):
            print(event.message, flush=True)

    session = GenerationSession(model)
    return run_grid(session, listing, _request(args, prompts[0], listing.sample), args.strength,
                    prompts, cell_done=_counter(len(prompts) * len(listing.states)), emit=log)


def _run_base(listing) -> str | None:
    """The base model the run was trained on (None: the built-in one)."""
    base = str(listing.config.get("model", {}).get("base", "") or "")
    return base or None


def _counter(total: int):
    done = [0]

    def cell(_r: int, _c: int, _image) -> None:
        done[0] += 1
        print(f"cell {done[0]}/{total}", flush=True)

    return cell


def _write(image, out: Path) -> None:
    from lora_studio.core.fileio import atomic_write_with

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(out, lambda tmp: image.save(tmp, format="PNG"))
    print(f"Grid written to {out}")
