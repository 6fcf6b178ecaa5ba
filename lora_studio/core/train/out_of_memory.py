"""A GPU out-of-memory error ends a training run cleanly, with what to change.

PyTorch raises `torch.OutOfMemoryError` (CUDA; ROCm and MPS raise a RuntimeError saying "out of
memory") from whichever allocation no longer fits: the first step's activations, the optimizer's
state on its first update, a preview at a larger size. The run then ends as a Failed job whose
message says where it stopped (the step reached, out of how many), where the LoRA trained so far
was saved (nothing is saved when no step had finished), and the settings that lower memory the
most for this run, in order (`memory.lower_memory_advice`).

Before saving, what the failed step held is released: the traceback's frames (the step's
tensors) are cleared and PyTorch's cached blocks returned, so writing the LoRA (small copies to
the CPU) does not run out of memory again.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_studio.core.errors import StudioError


@dataclass
class RunSoFar:
    """Where a run is, kept current by the trainer for whoever ends it early."""

    total_steps: int = 0
    model: Any = None  # the base model's ModelSource, once loaded (the estimate reads it)
    step: Callable[[], int] | None = None  # the last finished step (None: not training yet)
    save: Callable[[], Path | None] | None = None  # writes the LoRA of that step


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and "out of memory" in text \
        and any(backend in text for backend in ("cuda", "hip", "mps"))


def release(exc: BaseException) -> None:
    """Free what the failed work held: its frames' tensors, then the allocator's cache."""
    import torch

    traceback.clear_frames(exc.__traceback__)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def out_of_memory_error(cfg, so_far: RunSoFar, saved: Path | None,
                        save_problem: str = "") -> StudioError:
    """The message a run that ran out of GPU memory ends with."""
    from lora_studio.core.train.memory import lower_memory_advice

    step = so_far.step() if so_far.step is not None else None
    if step is None:
        where = "before training started (loading the model or caching the dataset)"
    elif step < so_far.total_steps:
        where = f"at step {step + 1} of {so_far.total_steps}"
    else:
        where = f"after the last step ({step}), saving the LoRA or rendering previews"
    if saved is not None:
        kept = f" The LoRA of step {step}, trained so far, is saved at {saved}."
    elif save_problem:
        kept = f" The LoRA trained so far could not be saved: {save_problem}"
    else:
        kept = " No step had finished, so no LoRA was saved."
    arch = so_far.model.arch if so_far.model is not None else "sd1"
    advice = lower_memory_advice(cfg, arch, model=so_far.model)
    steps = " ".join(f"{n}. {line}" for n, line in enumerate(advice, 1))
    return StudioError(f"The GPU ran out of memory {where}.{kept}",
                       f"Lower the memory this run needs, then start again: {steps}"
                       if steps else "Lower the resolution or the batch size.")


def save_after_out_of_memory(exc: BaseException, so_far: RunSoFar) -> tuple[Path | None, str]:
    """Release the failed step's memory and write the LoRA of the last finished step: (the
    file, "") or (None, why not) — (None, "") when no step had finished."""
    release(exc)
    if so_far.save is None or so_far.step is None or so_far.step() <= 0:
        return None, ""
    try:
        return so_far.save(), ""
    except Exception as problem:  # noqa: BLE001 - said in the out-of-memory message
        return None, f"{type(problem).__name__}: {problem}"
