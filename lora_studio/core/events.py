"""The one list of events a job emits.

Jobs (training, generation) report only through these dataclasses, passed to an `emit`
callback. The CLI prints them, the app carries them over Qt signals; neither reaches into a job.
Images are PIL images owned by the event (never shared with the worker afterwards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union
from collections.abc import Callable


@dataclass
class JobStarted:
    kind: str  # "train" | "generate" | "grid"
    total_steps: int
    message: str = ""


@dataclass
class Log:
    message: str
    level: str = "info"  # "info" | "warning"


@dataclass
class StepProgress:
    """One optimizer step of training."""

    step: int
    total_steps: int
    loss: float
    lr: float
    it_per_s: float
    eta_s: float
    epoch: int = 0


@dataclass
class Validation:
    """The validation loss at a step: fixed noise and timesteps on held-out images
    (`core/train/validation.py`), so values compare across steps."""

    step: int
    loss: float
    images: int


@dataclass
class Overfitting:
    """The validation loss says the LoRA is memorising its images (`train/overfit.py`): the
    step with the best validation loss and what to do."""

    step: int
    best_step: int
    message: str
    advice: str


@dataclass
class Diverged:
    """Training met a non-finite loss or gradient; that update was not applied, the last good
    LoRA is saved at `lora_path`, and the job is paused until resumed or cancelled (only when
    its control has `pause_on_divergence`; otherwise the job fails with the same message)."""

    step: int
    message: str
    advice: str
    lora_path: Path | None = None


@dataclass
class Preview:
    """A sample image rendered during training with fixed prompt and seed."""

    step: int
    prompt: str
    image: Any  # PIL.Image.Image
    index: int = 0
    # what `train.preview_check` found, checked where the image was made: "" it looks like a
    # picture, else ALL_BLACK / ALL_WHITE / FLAT; None: not checked yet
    problem: str | None = None


@dataclass
class GenerationStep:
    """One denoising step of generation; `image` is a cheap latent preview when present."""

    step: int
    total_steps: int
    image_index: int = 0
    image: Any = None


@dataclass
class ImageGenerated:
    path: Path | None
    image: Any  # PIL.Image.Image
    seed: int
    index: int = 0
    parameters: str = ""


@dataclass
class GridCellDone:
    """One cell of a grid (`core.generate.grid`) finished: row, column and its image."""

    row: int
    col: int
    image: Any  # PIL.Image.Image
    rows: int = 1  # the grid's size, so a view can lay it out from the first cell
    cols: int = 1


@dataclass
class CheckpointSaved:
    step: int
    path: Path


@dataclass
class LoraSaved:
    step: int
    path: Path
    final: bool = False


@dataclass
class Finished:
    result: Any = None
    outputs: list[Path] = field(default_factory=list)
    message: str = ""


@dataclass
class Failed:
    message: str  # what happened + what to do (StudioError.user_message())
    details: str = ""  # the traceback, shown only behind a "details" control


@dataclass
class Cancelled:
    message: str = ""
    outputs: list[Path] = field(default_factory=list)


Event = Union[
    JobStarted,
    Log,
    StepProgress,
    Validation,
    Overfitting,
    Diverged,
    Preview,
    GenerationStep,
    ImageGenerated,
    GridCellDone,
    CheckpointSaved,
    LoraSaved,
    Finished,
    Failed,
    Cancelled,
]
Emit = Callable[[Event], None]


def event_to_json(event: Event) -> dict[str, Any]:
    """A JSON-safe dict of an event (images become their size; paths strings)."""
    out: dict[str, Any] = {"event": type(event).__name__}
    for name, value in vars(event).items():
        if value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif isinstance(value, Path):
            out[name] = str(value)
        elif isinstance(value, list):
            out[name] = [str(v) for v in value]
        elif hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
            out[name] = {"width": value.size[0], "height": value.size[1]}
        else:
            out[name] = repr(value)
    return out
