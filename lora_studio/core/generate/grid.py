"""Strength grids: one prompt and seed, one or two LoRAs, a list of strengths on each axis,
rendered into one labelled PNG (A1111's X/Y plot for LoRA weights): `lora-studio grid`.

Rows are the first LoRA's strengths, columns the second's (or one row when there is only one
LoRA). Every cell is the same request with the same seed; only the weights differ, set with
`GenerationSession.set_weight` (no reload). `cell_done(row, col, image)` is called as each cell
finishes (the Mix tab shows them as they come); a cancelled grid returns the cells done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lora_studio.core.generate.session import GenerationRequest, GenerationSession

LABEL = 18  # pixels of the header row / label column


@dataclass
class GridAxis:
    lora: str  # the adapter name in the session
    strengths: Sequence[float]


@dataclass
class GridResult:
    image: Any  # the labelled PIL image
    cells: list[list[Any]] = field(default_factory=list)  # rows of PIL images (None: not done)
    complete: bool = True


def strength_grid(session: GenerationSession, request: GenerationRequest, rows: GridAxis,
                  cols: GridAxis | None = None, *, control: Any = None,
                  cell_done: Callable[[int, int, Any], None] | None = None) -> GridResult:
    """Render the grid (see the module docstring); the session's own weights come back after."""
    before = {lo.name: lo.weight for lo in session.loras}
    col_strengths = list(cols.strengths) if cols is not None else [None]
    cells: list[list[Any]] = [[None] * len(col_strengths) for _ in rows.strengths]
    single = replace(request, count=1, out_dir=None)
    complete = True
    try:
        for r, row_w in enumerate(rows.strengths):
            for c, col_w in enumerate(col_strengths):
                if control is not None and control.cancelled:
                    complete = False
                    break
                session.set_weight(rows.lora, row_w)
                if cols is not None:
                    session.set_weight(cols.lora, col_w)
                (result,) = session.generate(single)
                cells[r][c] = result.image
                if cell_done is not None:
                    cell_done(r, c, result.image)
            if not complete:
                break
    finally:
        for name, weight in before.items():
            session.set_weight(name, weight)
    return GridResult(compose(cells, rows, cols), cells, complete)


def compose(cells: list[list[Any]], rows: GridAxis, cols: GridAxis | None):
    """The cells on one canvas with the strengths written above and beside them."""
    from PIL import Image, ImageDraw

    sample = next((im for row in cells for im in row if im is not None), None)
    width, height = sample.size if sample is not None else (64, 64)
    n_cols = len(cells[0]) if cells else 1
    canvas = Image.new("RGB", (LABEL * 3 + n_cols * width, LABEL + len(cells) * height),
                       (32, 34, 38))
    pen = ImageDraw.Draw(canvas)
    if cols is not None:
        for c, weight in enumerate(cols.strengths):
            pen.text((LABEL * 3 + c * width + 4, 3), f"{_short(cols.lora)} {weight:g}",
                     fill=(230, 232, 235))
    for r, weight in enumerate(rows.strengths):
        pen.text((3, LABEL + r * height + height // 2 - 6), f"{weight:g}", fill=(230, 232, 235))
        for c in range(n_cols):
            if cells[r][c] is not None:
                canvas.paste(cells[r][c].convert("RGB"),
                             (LABEL * 3 + c * width, LABEL + r * height))
    pen.text((3, 3), _short(rows.lora), fill=(150, 155, 160))
    return canvas


def _short(name: str, limit: int = 10) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"
