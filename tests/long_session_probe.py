"""Long app sessions measured in a process of their own (for tests/core/test_long_sessions.py):
a LoRA loaded onto the sliders and removed again many times, many short training runs one
after another, as the app does them (one process, the same worker code). Prints one JSON line
with what the process holds after a warm-up and at the end.

  python tests/long_session_probe.py loras MODEL LORA_FILE CYCLES WARMUP RENDER_EVERY
  python tests/long_session_probe.py training CONFIG_JSON OUT_DIR RUNS WARMUP

A process of its own: pytest's process carries what earlier tests left (threads finishing,
allocator state), which would blur a measurement of a few hundred KiB.

What is measured, after `gc.collect()` and glibc's `malloc_trim(0)` (free heap handed back, so
that RSS shows what is held, not what the allocator keeps for later):
- rss: resident bytes (/proc/self/statm).
- blocks: `sys.getallocatedblocks()`, Python's live small-object allocations. A leaked
  reference (an int, a dict entry) shows here one by one, where RSS moves only a page at a
  time (a leak first fills the free space of the allocator's arenas, which is resident already).
  To find what holds them, compare tracemalloc snapshots over a few cycles (slow: tracemalloc
  makes these loops four times longer, so the probe does not run under it).
- tensors / modules / pipelines / peft_configs: live objects of those kinds.
- threads, fds, log_handlers: threads alive, open file descriptors, handlers on all loggers.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import sys
import threading
from pathlib import Path


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS keeps what the allocator keeps
        pass


def _rss() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: not counted
        return 0


def _log_handlers() -> int:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return sum(len(lg.handlers) for lg in loggers)


def sample() -> dict[str, int]:
    import torch
    from diffusers import DiffusionPipeline

    gc.collect()
    counts = {"tensors": 0, "modules": 0, "pipelines": 0, "peft_configs": 0}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            counts["tensors"] += 1
        elif isinstance(obj, torch.nn.Module):
            counts["modules"] += 1
            counts["peft_configs"] += len(getattr(obj, "peft_config", None) or {})
        elif isinstance(obj, DiffusionPipeline):
            counts["pipelines"] += 1
    _trim()
    return {"rss": _rss(), "blocks": sys.getallocatedblocks(), **counts,
            "threads": threading.active_count(), "fds": _open_fds(),
            "log_handlers": _log_handlers()}


def loras(model: str, lora: str, cycles: int, warmup: int, render_every: int) -> dict:
    """`cycles` add_lora / remove_lora on one GenerationSession, rendering one 64 px image
    of 2 steps between them every `render_every` cycles."""
    from lora_studio.core.generate.adapters import lora_layers
    from lora_studio.core.generate.session import GenerationRequest, GenerationSession

    session = GenerationSession(model)
    found = {}
    for cycle in range(1, cycles + 1):
        report = session.add_lora(lora, 0.8)
        if render_every and cycle % render_every == 0:
            session.generate(GenerationRequest("a red circle", steps=2, seed=cycle, width=64,
                                               height=64))
        session.remove_lora(report.adapter_name)
        if cycle == warmup:
            found["warm"] = sample()
    found["end"] = sample()
    pipe = session.pipeline
    found["adapters_left"] = sorted({n for names in pipe.get_list_adapters().values()
                                     for n in names})
    found["adapter_entries_left"] = sum(
        len(layer.lora_A) + len(layer.scaling) for part in ("unet", "text_encoder")
        for _, layer in lora_layers(getattr(pipe, part)))
    return found


def training(config_json: str, out: str, runs: int, warmup: int) -> dict:
    """`runs` training runs one after another, each to a folder of its own, as the app's
    worker thread runs them (`run_training_job`). modules_on_return: the torch modules alive
    when the last run's job has returned, automatic garbage collection kept off during it (a
    model left in a reference cycle would still be there)."""
    from lora_studio.core import events as ev
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.train.config import config_from_dict
    from lora_studio.core.train.trainer import run_training_job

    import torch

    data = json.loads(config_json)
    found: dict = {"endings": []}
    for run in range(1, runs + 1):
        data["output"]["path"] = str(Path(out) / f"run{run}")
        last = run == runs
        if last:  # what the job itself leaves behind, with no collection after it
            gc.collect()
            gc.disable()
        ending = run_training_job(config_from_dict(data), lambda event: None, JobControl())
        if last:
            found["modules_on_return"] = sum(isinstance(o, torch.nn.Module)
                                             for o in gc.get_objects())
            gc.enable()
        found["endings"].append(type(ending).__name__ if isinstance(ending, ev.Finished)
                                else f"{type(ending).__name__}: {ending.message}")
        if run == warmup:
            found["warm"] = sample()
    found["end"] = sample()
    return found


def main(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)  # steady timings beside other test runs; the same memory
    logging.disable(logging.WARNING)  # diffusers' per-load notes: noise in the output
    kind, args = argv[0], argv[1:]
    if kind == "loras":
        result = loras(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    elif kind == "training":
        result = training(args[0], args[1], int(args[2]), int(args[3]))
    else:
        raise SystemExit(f"unknown probe {kind!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
