"""Strength grids: one prompt and seed, one or two LoRAs, a list of strengths on each axis,
rendered into one labelled PNG (A1111's X/Y plot for LoRA weights): `lora-studio grid`.

Rows are the first LoRA's strengths, columns the second's (or one row when there is only one
LoRA). Every cell is the same request with the same seed; only the weights differ, set with
`GenerationSession.set_weight` (no reload). As each cell finishes, `cell_done(row, col, image)`
is called and `emit` gets a `GridCellDone` event (the Mix tab shows the cells as they come);
`emit` also gets each cell's `GenerationStep`s. A cancel (`control.cancelled`) stops the cell in
progress after its current denoising step; the grid returns the cells done (`complete` False).

`compose` lays finished cells out on one canvas with their labels: the CLI and the Mix tab's
"Save PNG…" write that same canvas. The grid over a training run's checkpoints (`run_grid`)
uses the same cell loop and canvas.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lora_studio.core import events
from lora_studio.core.errors import ConfigError
from lora_studio.core.generate.session import GenerationRequest, GenerationSession

LABEL = 18  # pixels of a header line / a third of the narrowest label column
MAX_STRENGTHS = 16
_MAX_LABEL_COLUMN = 180
_BACKGROUND, _INK, _DIM = (32, 34, 38), (230, 232, 235), (150, 155, 160)

CellDone = Callable[[int, int, Any], None]
RenderCell = Callable[[int, int], Any]  # (row, col) -> the cell's PIL image, None if cancelled


@dataclass
class GridAxis:
    lora: str  # the adapter name in the session
    strengths: Sequence[float]


@dataclass
class GridResult:
    image: Any  # the labelled PIL image
    cells: list[list[Any]] = field(default_factory=list)  # rows of PIL images (None: not done)
    complete: bool = True
    row_labels: list[str] = field(default_factory=list)
    col_labels: list[str] = field(default_factory=list)
    corner: str = ""


def parse_strengths(text: str, key: str = "strengths") -> list[float]:
    """"0, 0.25, 0.5" (commas and/or spaces) -> [0.0, 0.25, 0.5]; ConfigError naming `key`
    for anything else (a word, nothing at all, more than MAX_STRENGTHS values)."""
    parts = [p for p in text.replace(",", " ").replace(";", " ").split() if p]
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(key, f"{part!r} is not a number",
                              "Write the strengths like 0, 0.25, 0.5, 0.75, 1.")
        values.append(value)
    if not values:
        raise ConfigError(key, "no strengths given", "Write them like 0, 0.5, 1.")
    if len(values) > MAX_STRENGTHS:
        raise ConfigError(key, f"{len(values)} strengths; at most {MAX_STRENGTHS} fit a grid",
                          "Use fewer, e.g. 0, 0.25, 0.5, 0.75, 1.")
    return values


def strength_labels(rows: GridAxis, cols: GridAxis | None) -> tuple[list[str], list[str], str]:
    """(row labels, column labels, corner) of a strength grid."""
    col_labels = ([f"{_short(cols.lora)} {w:g}" for w in cols.strengths] if cols is not None
                  else [""])
    return [f"{w:g}" for w in rows.strengths], col_labels, _short(rows.lora)


def fixed_seed(request: GenerationRequest) -> GenerationRequest:
    """One image per call, not saved, with a seed drawn once when the request has none: every
    cell of a grid must share it."""
    seed = request.seed if request.seed is not None else random.randrange(2**32)
    return replace(request, count=1, out_dir=None, seed=seed)


def strength_grid(session: GenerationSession, request: GenerationRequest, rows: GridAxis,
                  cols: GridAxis | None = None, *, control: Any = None,
                  cell_done: CellDone | None = None,
                  emit: events.Emit | None = None) -> GridResult:
    """Render the grid (see the module docstring); the session's own weights come back after."""
    before = {lo.name: lo.weight for lo in session.loras}
    col_strengths = list(cols.strengths) if cols is not None else [None]
    single = fixed_seed(request)

    def render(r: int, c: int) -> Any:
        session.set_weight(rows.lora, rows.strengths[r])
        if cols is not None:
            session.set_weight(cols.lora, col_strengths[c])
        return render_cell(session, single, control, emit)

    try:
        cells, complete = run_cells(len(rows.strengths), len(col_strengths), render,
                                    control=control, cell_done=cell_done, emit=emit)
    finally:
        for name, weight in before.items():
            session.set_weight(name, weight)
    labels = strength_labels(rows, cols)
    return GridResult(compose(cells, *labels), cells, complete, *labels)


def run_cells(n_rows: int, n_cols: int, render: RenderCell, *, control: Any = None,
              cell_done: CellDone | None = None,
              emit: events.Emit | None = None,
              by_column: bool = False) -> tuple[list[list[Any]], bool]:
    """Render every cell, row after row (`by_column`: column after column): (the cells,
    whether all were done)."""
    emit = emit or (lambda event: None)
    emit(events.JobStarted("grid", n_rows * n_cols, f"{n_rows} × {n_cols} grid"))
    cells: list[list[Any]] = [[None] * n_cols for _ in range(n_rows)]
    order = ([(r, c) for c in range(n_cols) for r in range(n_rows)] if by_column
             else [(r, c) for r in range(n_rows) for c in range(n_cols)])
    for r, c in order:
        image = None if control is not None and control.cancelled else render(r, c)
        if image is None:
            return cells, False
        cells[r][c] = image
        if cell_done is not None:
            cell_done(r, c, image)
        emit(events.GridCellDone(r, c, image, n_rows, n_cols))
    return cells, True


def render_cell(session: GenerationSession, request: GenerationRequest, control: Any = None,
                emit: events.Emit | None = None) -> Any:
    """One image for `request` (count 1), or None when cancelled meanwhile. Only the denoising
    steps are passed on to `emit`: the grid reports its own start, cells and end."""

    def steps_only(event: events.Event) -> None:
        if emit is not None and isinstance(event, events.GenerationStep):
            emit(event)

    results = session.generate(request, steps_only, control)
    return results[0].image if results else None


def compose(cells: list[list[Any]], row_labels: Sequence[str], col_labels: Sequence[str],
            corner: str = ""):
    """The cells on one canvas: column labels above (one header line per label line), row
    labels in a column at the left; cells not done stay background."""
    from PIL import Image, ImageDraw

    sample = next((im for row in cells for im in row if im is not None), None)
    width, height = sample.size if sample is not None else (64, 64)
    n_cols = len(cells[0]) if cells else 1
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max([LABEL * 3] + [min(_MAX_LABEL_COLUMN, int(probe.textlength(t)) + 8)
                              for t in (*row_labels, corner)])
    lines = max([1] + [len(t.splitlines()) for t in col_labels])
    top = LABEL * lines
    canvas = Image.new("RGB", (left + n_cols * width, top + len(cells) * height), _BACKGROUND)
    pen = ImageDraw.Draw(canvas)
    for c, text in enumerate(col_labels):
        pen.multiline_text((left + c * width + 4, 3), text, fill=_INK, spacing=6)
    for r, text in enumerate(row_labels):
        pen.text((3, top + r * height + height // 2 - 6), _fit(probe, text, left - 6), fill=_INK)
        for c in range(n_cols):
            if cells[r][c] is not None:
                canvas.paste(cells[r][c].convert("RGB"), (left + c * width, top + r * height))
    pen.text((3, 3), _fit(probe, corner, left - 6), fill=_DIM)
    return canvas


def _fit(pen, text: str, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if pen.textlength(text) <= width:
        return text
    while text and pen.textlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _short(name: str, limit: int = 10) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"
