"""`lora-studio generate`: load a base model and LoRAs, render, save PNGs with A1111 PNG info.

Prints, for each LoRA, how many of its modules matched the model (a LoRA that silently loads as a
no-op is the most common complaint, REFERENCE §7), then each saved file. Progress goes to stderr.
Errors a person can fix (a LoRA for another model, an unknown sampler) are raised as StudioError;
`lora_studio.cli.main` prints them and exits non-zero.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lora_studio.core import events
from lora_studio.core.errors import StudioError
from lora_studio.core.generate.stack import StackEntry
from lora_studio.core.lora.block_weights import BlockWeights

_MAX_UNMATCHED_SHOWN = 5
_OPTIONS = (":lbw=", ":start=")


def parse_lora_arg(value: str) -> StackEntry:
    """`FILE[:WEIGHT][:lbw=BLOCKS][:start=SHARE]` → StackEntry(path, weight, block_weights=...,
    start=...), the stack's one record.

    Splits on the last colon only when what follows is a number, so Windows paths work:
    `C:\\loras\\style.safetensors:0.8` → (`C:\\loras\\style.safetensors`, 0.8), and
    `C:\\loras\\style.safetensors` → weight 1. A file that exists under the whole name wins.
    `:lbw=` takes A1111 LoRA Block Weight factors, as in a prompt tag: a preset (`OUTALL`) or
    17 numbers (`1,0,0,...`); `:start=` the share of the steps before the LoRA comes in (the
    Mix tab's "Starts at"). Ones that cannot be read are a StudioError."""
    value = value.strip()
    options: dict[str, str] = {}
    while not Path(value).is_file():
        cut, key = max((value.lower().rfind(k), k) for k in _OPTIONS)
        if cut <= 0:
            break
        options[key] = value[cut + len(key):]
        value = value[:cut]
    block_weights = BlockWeights.parse(options[":lbw="]) if ":lbw=" in options else None
    start = _start(options.get(":start=", "0"))
    head, sep, tail = value.rpartition(":")
    if sep and head and not Path(value).is_file():
        try:
            weight = float(tail)
        except ValueError:
            weight = math.nan
        if math.isfinite(weight):
            return StackEntry(Path(head), weight, block_weights=block_weights, start=start)
    return StackEntry(Path(value), 1.0, block_weights=block_weights, start=start)


def _start(text: str) -> float:
    try:
        start = float(text)
    except ValueError:
        start = math.nan
    if not 0.0 <= start < 1.0:
        raise StudioError(f"start={text} is not a share of the steps.",
                          "Give 0 (from the first step) up to 0.95, e.g. FILE:1:start=0.5.")
    return start


def _report_line(path: Path, report) -> str:
    line = f"{path.name}: {report.matched}/{report.total} modules matched"
    unmatched = list(getattr(report, "unmatched", []) or [])
    if unmatched:
        shown = ", ".join(unmatched[:_MAX_UNMATCHED_SHOWN])
        more = f" (+{len(unmatched) - _MAX_UNMATCHED_SHOWN} more)" \
            if len(unmatched) > _MAX_UNMATCHED_SHOWN else ""
        line += f"; not matched: {shown}{more}"
    return line


class _ConsoleProgress:
    """Turns generation events into a tqdm bar on stderr and saved paths on stdout."""

    def __init__(self) -> None:
        self._bar = None

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.GenerationStep):
            self._step(event)
        elif isinstance(event, events.ImageGenerated):
            self._close()
            print(f"Saved {event.path} (seed {event.seed})", flush=True)
        elif isinstance(event, events.Log):
            self._close()
            print(f"{event.level}: {event.message}", file=sys.stderr)
        elif isinstance(event, events.Cancelled):
            self._close()
            print(event.message, file=sys.stderr)

    def _step(self, event: events.GenerationStep) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=event.total_steps, desc=f"image {event.image_index + 1}",
                             file=sys.stderr, leave=False, dynamic_ncols=True)
        self._bar.update(event.step - self._bar.n)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def run_generate_command(args: argparse.Namespace) -> int:
    """Run `lora-studio generate` with the parsed arguments; returns the exit code."""
    from lora_studio.core.generate.session import GenerationRequest, GenerationSession
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.lora.lycoris_read import read_network

    loras = [parse_lora_arg(spec) for spec in args.lora]
    for entry in loras:
        if not entry.path.is_file():
            raise StudioError(f"LoRA file not found: {entry.path}",
                              "Check the path; give a weight as FILE:0.8.")
        read_network(entry.path)  # a damaged or unsupported file is refused before the model loads
    request = GenerationRequest(
        prompt=args.prompt, negative=args.negative or "", steps=args.steps, cfg=args.cfg,
        seed=args.seed, width=args.width, height=args.height, sampler=args.sampler,
        count=args.count, out_dir=Path(args.out),
    )
    session = GenerationSession(args.model)
    stack = session.set_stack(loras)
    for entry in loras:
        if entry.key in stack.errors:
            raise stack.errors[entry.key]  # a LoRA asked for by name must load
        line = _report_line(entry.path, stack.loaded[entry.key])
        if entry.block_weights is not None:
            line += f"; block weights {entry.block_weights.notation()}"
        if entry.start:
            line += f"; starts at {entry.start:.0%} of the steps"
        print(line, flush=True)
    control = JobControl()
    progress = _ConsoleProgress()
    try:
        results = session.generate(request, emit=progress, control=control)
    finally:
        progress._close()
    if results:
        print(f"Seed: {results[0].seed}" + (f" (images {results[0].seed}..{results[-1].seed})"
                                            if len(results) > 1 else ""))
    return 0 if len(results) == request.count else 130
