"""The Mix tab's grids, as a view-model: what to render (`GridPlan`), the cells as they come,
cancel, and the labelled canvas to save.

A grid is one job on the window's runner through `SessionModel.run_grid` (the stack is applied
first, so the other LoRAs of the stack are in a strength grid as they are on the sliders). The
job is `core.generate.grid.strength_grid` or `core.generate.run_grid.run_grid`; each finished
cell arrives as a `GridCellDone` event and is re-emitted as `cell_ready(row, col, image)`. A
live preview that is rendering when a grid starts is stopped first (`LivePreview.make_way`); the
grid starts when it has ended and the preview renders again after the grid. While another job
(training, a Generate render) runs, a grid does not start and `message` says why.

`canvas()` is `core.generate.grid.compose` of the cells done: the very canvas
`lora-studio grid` writes; `save_png(path)` writes it atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from lora_studio.core import events as ev
from lora_studio.core.errors import StudioError
from lora_studio.core.generate.grid import GridAxis, compose, strength_labels
from lora_studio.core.generate.run_grid import RunListing, run_labels
from lora_studio.core.generate.session import GenerationRequest
from lora_studio.core.paths import path_key
from lora_studio.ui.session_model import SessionModel


@dataclass
class GridPlan:
    """A strength grid (`rows`, optional `cols`: (LoRA file of the stack, its name, strengths))
    or, with `listing`, a grid over a training run's saved states at `strength`, one row per
    prompt of `prompts` (default: the request's)."""

    request: GenerationRequest
    rows: tuple[Path, str, list[float]] | None = None
    cols: tuple[Path, str, list[float]] | None = None
    listing: RunListing | None = None
    strength: float = 1.0
    prompts: list[str] = field(default_factory=list)
    best_step: int | None = None  # where the run's validation loss was lowest (run grids)

    def best_column(self) -> int | None:
        """The column of the saved state nearest `best_step` (None: no run or no best step)."""
        if self.listing is None or self.best_step is None:
            return None
        state = self.listing.nearest(self.best_step)
        return None if state is None else self.listing.states.index(state)

    def view_labels(self) -> tuple[list[str], list[str], str]:
        """(row labels, column labels, title) for the grid on screen: the names go into one
        title line, so the headers keep only what changes (strengths, steps)."""
        seed = f"seed {self.request.seed}"
        if self.listing is not None:
            rows, cols, _ = self.labels()
            best = self.best_column()
            if best is not None:
                cols[best] += "\n★ best"
            return rows, cols, f"{self.listing.name} at strength {self.strength:g} · {seed}"
        assert self.rows is not None
        title = f"Rows: {self.rows[1]}"
        if self.cols is not None:
            title += f" · Columns: {self.cols[1]}"
        cols = [f"{w:g}" for w in self.cols[2]] if self.cols is not None else [""]
        return [f"{w:g}" for w in self.rows[2]], cols, f"{title} · {seed}"

    def labels(self) -> tuple[list[str], list[str], str]:
        """(row labels, column labels, corner) of the saved PNG, as the CLI writes them."""
        if self.listing is not None:
            return run_labels(self.listing.states, self.prompts or [self.request.prompt],
                              self.strength)
        assert self.rows is not None
        cols = GridAxis(self.cols[1], self.cols[2]) if self.cols else None
        return strength_labels(GridAxis(self.rows[1], self.rows[2]), cols)


class GridModel(QObject):
    started = Signal()  # the layout (labels) of a new grid is known; no cell yet
    cell_ready = Signal(int, int, object)  # row, column, PIL image
    message = Signal(str)  # progress, and why a grid did not start
    finished = Signal(object)  # the job's Finished / Failed / Cancelled

    def __init__(self, model: SessionModel, make_way: Callable[[], bool] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._make_way = make_way or (lambda: False)
        self.row_labels: list[str] = []
        self.col_labels: list[str] = []
        self.corner = ""
        self.view_labels: tuple[list[str], list[str], str] = ([], [], "")
        self.highlight: int | None = None  # the column marked best (a run's best step)
        self.cells: list[list[Any]] = []
        self._pending: Callable | None = None  # a grid waiting for a preview to stop
        self._step = ""
        model.grid_event.connect(self._on_event)
        model.grid_finished.connect(self._on_finished)
        model.runner.finished.connect(self._start_pending)

    @property
    def is_running(self) -> bool:
        return self._pending is not None or self.model.is_rendering_grid

    @property
    def cells_done(self) -> int:
        return sum(cell is not None for row in self.cells for cell in row)

    def start(self, plan: GridPlan) -> bool:
        """Render `plan` (see the module docstring). False, with a `message`, when it cannot
        start now."""
        runner = self.model.runner
        if self.is_running:
            self.message.emit("A grid is rendering: wait for it or cancel it.")
            return False
        if runner.is_running and not self.model.is_previewing:
            self.message.emit(f"The {runner.job_name} is running: render the grid when it has "
                              "finished.")
            return False
        self.row_labels, self.col_labels, self.corner = plan.labels()
        self.view_labels = plan.view_labels()
        self.highlight = plan.best_column()
        self.cells = [[None] * len(self.col_labels) for _ in self.row_labels]
        self._step = ""
        self.started.emit()
        work = _work(plan)
        if self._make_way():
            self._pending = work
            self.message.emit("Stopping the live preview…")
            return True
        return self._launch(work)

    def cancel(self) -> None:
        """Stop after the current denoising step; the cells done stay."""
        if self._pending is not None:
            self._pending = None
            self.message.emit("Cancelled before the first cell.")
            self.finished.emit(ev.Cancelled("Cancelled."))
        elif self.model.is_rendering_grid:
            self.model.cancel()
            self.message.emit("Cancelling after the current step…")

    def canvas(self):
        """The labelled PIL image of the cells done (None before any)."""
        if not self.cells_done:
            return None
        return compose(self.cells, self.row_labels, self.col_labels, self.corner)

    def save_png(self, path: str | Path) -> Path:
        from lora_studio.core.fileio import atomic_write_with

        image = self.canvas()
        if image is None:
            raise StudioError("The grid has no cells yet.", "Render a grid first.")
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_name(path.name + ".png")
        atomic_write_with(path, lambda tmp: image.save(tmp, format="PNG"))
        return path

    # ------------------------------------------------------------------ internals
    def _launch(self, work: Callable) -> bool:
        if not self.model.run_grid(work):
            self.message.emit("Another job started first: try again when it has finished.")
            return False
        self.message.emit(f"Rendering 0 / {self._total()} cells…")
        return True

    def _start_pending(self, _terminal: ev.Event) -> None:
        if self._pending is not None and not self.model.runner.is_running:
            work, self._pending = self._pending, None
            if not self._launch(work):
                self.finished.emit(ev.Cancelled("Not started."))

    def _total(self) -> int:
        return len(self.row_labels) * len(self.col_labels)

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.GridCellDone):
            if event.row < len(self.cells) and event.col < len(self.cells[event.row]):
                self.cells[event.row][event.col] = event.image
                self.cell_ready.emit(event.row, event.col, event.image)
                self.message.emit(f"Rendering {self.cells_done} / {self._total()} cells…")
        elif isinstance(event, ev.GenerationStep):
            self.message.emit(f"Rendering {self.cells_done} / {self._total()} cells… "
                              f"(step {event.step}/{event.total_steps})")
        elif isinstance(event, ev.Log):
            self.message.emit(event.message)

    def _on_finished(self, terminal: ev.Event) -> None:
        done, total = self.cells_done, self._total()
        if isinstance(terminal, ev.Finished):
            self.message.emit(f"Done: {done} cells. Save PNG… writes the labelled grid.")
        elif isinstance(terminal, ev.Cancelled):
            self.message.emit(f"Cancelled: {done} of {total} cells kept.")
        elif isinstance(terminal, ev.Failed):
            self.message.emit(f"The grid failed: {terminal.message}")
        self.finished.emit(terminal)


def _work(plan: GridPlan) -> Callable[[Any, dict[str, str], ev.Emit, Any], Any]:
    """The job body for `SessionModel.run_grid` (runs in the worker thread)."""

    def work(session, adapters: dict[str, str], emit: ev.Emit, control) -> Any:
        if plan.listing is not None:
            from lora_studio.core.generate.run_grid import run_grid

            return run_grid(session, plan.listing, plan.request, plan.strength,
                            plan.prompts or None, control=control, emit=emit)
        from lora_studio.core.generate.grid import strength_grid

        axes = [axis for axis in (plan.rows, plan.cols) if axis is not None]
        names = []
        for path, label, _ in axes:
            name = adapters.get(path_key(path))
            if name is None:
                raise StudioError(f"{label} could not be loaded, so it cannot be on the grid.",
                                  "See its message in the stack, or pick another LoRA.")
            names.append(name)
        was_on = {lo.name: lo.enabled for lo in session.loras}
        for name in names:  # a switched-off LoRA is on for its own axis
            session.set_enabled(name, True)
        try:
            grid_axes = [GridAxis(name, axis[2]) for name, axis in zip(names, axes)]
            return strength_grid(session, plan.request, *grid_axes, control=control, emit=emit)
        finally:
            for name in names:
                session.set_enabled(name, was_on.get(name, True))

    return work
