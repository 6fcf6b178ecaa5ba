"""The Mix tab's "Grid" panel: what to compare, Render / Cancel / Save PNG…, and the grid.

Two kinds of grid (the "Compare" box):
* LoRA strengths: one LoRA of the stack on the rows and, optionally, another on the columns,
  each with its strengths ("0, 0.25, 0.5, 0.75, 1"); the rest of the stack as on the sliders.
* A training run's steps: a run's output folder (`set_run_folder`, or "Choose…"); one column
  per saved step at one strength, one row per prompt (default: the run's preview prompts).

Prompt (empty: the live preview's prompt, i.e. the trigger words), seed and steps are shared.
A strength list that cannot be read is a message under the fields, naming the field. The panel
only binds to its `GridModel`: cells appear in the `GridView` as they finish.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core import events as ev
from lora_studio.core.errors import StudioError
from lora_studio.core.generate.grid import parse_strengths
from lora_studio.core.generate.run_grid import RunListing, list_run
from lora_studio.core.generate.session import GenerationRequest
from lora_studio.ui.base_model import normal_spec, short_label
from lora_studio.ui.grid_model import GridModel, GridPlan
from lora_studio.ui.widgets.grid_view import GridView
from lora_studio.ui.widgets.preview_strip import to_pixmap

DEFAULT_STRENGTHS = "0, 0.25, 0.5, 0.75, 1"
STRENGTHS, RUN = 0, 1
SAMPLER = "DPM++ 2M"  # the live preview's
NO_COLUMNS = "— none (one column)"


class StrengthGridPanel(QWidget):
    def __init__(self, grid: GridModel, default_prompt: Callable[[], str] = lambda: "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.grid = grid
        self.model = grid.model
        self._default_prompt = default_prompt
        self.listing: RunListing | None = None
        self.best_step: int | None = None  # the run's best validation step, when known
        self._build()
        self.model.stack_changed.connect(self._sync_loras)
        grid.started.connect(self._on_started)
        grid.cell_ready.connect(lambda r, c, image: self.view.set_cell(r, c, to_pixmap(image)))
        grid.message.connect(self.status_label.setText)
        grid.finished.connect(self._on_finished)
        self.model.runner.started.connect(lambda _name: self._update_buttons())
        self.model.runner.finished.connect(lambda _end: self._update_buttons())
        self._sync_loras()
        self._update_buttons()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["LoRA strengths", "A training run's steps"])
        self.mode_combo.setToolTip("Strengths of one or two stacked LoRAs, or every step a "
                                   "training run saved (which one is best?)")
        self.rows_combo, self.cols_combo = QComboBox(), QComboBox()
        self.rows_edit, self.cols_edit = QLineEdit(DEFAULT_STRENGTHS), QLineEdit(DEFAULT_STRENGTHS)
        for edit in (self.rows_edit, self.cols_edit):
            edit.setToolTip("Strengths, separated by commas (at most 16), e.g. 0, 0.5, 1")
            edit.textEdited.connect(lambda _text: self._say_problem(""))
        self.cols_combo.currentIndexChanged.connect(
            lambda _i: self.cols_edit.setEnabled(self.cols_combo.currentData() is not None))
        strengths_page = QWidget()
        form = QFormLayout(strengths_page)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Rows", _pair(self.rows_combo, self.rows_edit))
        form.addRow("Columns", _pair(self.cols_combo, self.cols_edit))

        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("A training run's output folder")
        self.run_edit.editingFinished.connect(lambda: self.set_run_folder(self.run_edit.text()))
        self.choose_run_button = QPushButton("Choose…")
        self.choose_run_button.clicked.connect(self._choose_run)
        self.strength_spin = _spin(QDoubleSpinBox(), -2.0, 2.0, 1.0)
        self.strength_spin.setSingleStep(0.05)
        self.strength_spin.setToolTip("The strength of every step's LoRA")
        self.run_summary = QLabel("")
        self.run_summary.setObjectName("HintLabel")
        self.run_summary.setWordWrap(True)
        run_page = QWidget()
        run_form = QFormLayout(run_page)
        run_form.setContentsMargins(0, 0, 0, 0)
        run_form.addRow("Run", _pair(self.run_edit, self.choose_run_button, 0))
        run_form.addRow("Strength", self.strength_spin)
        run_form.addRow(self.run_summary)
        self.pages = QStackedWidget()
        self.pages.addWidget(strengths_page)
        self.pages.addWidget(run_page)
        self.mode_combo.currentIndexChanged.connect(self._mode_changed)

        self.prompt_edit = QLineEdit()
        self.prompt_edit.setToolTip("Empty: the live preview's prompt (the trigger words); for a "
                                    "run, its preview prompts, one row each")
        self.seed_spin = _spin(QSpinBox(), 0, 2**31 - 1, 1234)
        self.steps_spin = _spin(QSpinBox(), 1, 150, 20)
        settings = QHBoxLayout()
        settings.addWidget(self.seed_spin, 1)
        settings.addWidget(QLabel("Steps"))
        settings.addWidget(self.steps_spin)

        self.render_button = QPushButton("Render grid")
        self.render_button.setObjectName("PrimaryButton")
        self.render_button.clicked.connect(self.render)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step; the cells done stay")
        self.cancel_button.clicked.connect(self.grid.cancel)
        self.save_button = QPushButton("Save PNG…")
        self.save_button.setToolTip("The grid with its labels, as `lora-studio grid` writes it")
        self.save_button.clicked.connect(self._save_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(self.render_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        self.problem_label = QLabel("")
        self.problem_label.setObjectName("ProblemLabel")
        self.problem_label.setWordWrap(True)
        self.problem_label.hide()
        self.status_label = QLabel("")
        self.status_label.setObjectName("HintLabel")
        self.status_label.setWordWrap(True)
        self.view = GridView("Pick what to compare and press “Render grid”: the cells appear "
                             "here as they finish.")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        form_top = QFormLayout()
        form_top.addRow("Compare", self.mode_combo)
        layout.addLayout(form_top)
        layout.addWidget(self.pages)
        prompt_form = QFormLayout()
        prompt_form.addRow("Prompt", self.prompt_edit)
        prompt_form.addRow("Seed", _holder(settings))
        layout.addLayout(prompt_form)
        layout.addLayout(buttons)
        layout.addWidget(self.problem_label)
        layout.addWidget(self.status_label)
        layout.addWidget(self.view, 1)
        self._mode_changed(STRENGTHS)

    # ------------------------------------------------------------------ public
    def set_mode(self, mode: int) -> None:
        self.mode_combo.setCurrentIndex(mode)

    def set_run_folder(self, folder: str | Path, best_step: int | None = None
                       ) -> RunListing | None:
        """Compare the saved steps of the run in `folder` (switches to that mode); with
        `best_step` (where its validation loss was lowest), say which saved LoRA is nearest."""
        self.set_mode(RUN)
        text = str(folder).strip()
        self.run_edit.setText(text)
        self.listing = None
        if not text:
            self.run_summary.setText("")
        else:
            try:
                self.listing = list_run(text)
            except StudioError as exc:
                self.run_summary.setText(exc.user_message())
            else:
                best = self.listing.best_step_note(best_step) if best_step is not None else ""
                self.run_summary.setText(self.listing.summary() + best
                                         + self._base_note(self.listing))
                self._use_run_settings(self.listing)
        self.best_step = best_step if self.listing is not None else None
        self._show_layout()
        self._update_buttons()
        return self.listing

    def _show_layout(self) -> None:
        """The grid's empty cells, best step marked, before anything renders (a grid on screen
        is left alone while it renders)."""
        if self.grid.is_running or self.listing is None or not self.listing.states:
            return
        try:
            plan = self.plan()
        except StudioError:
            return
        self.view.set_grid(*plan.view_labels())
        self.view.set_highlight(plan.best_column())

    def plan(self) -> GridPlan:
        """The grid the fields describe; StudioError (naming the field) when they cannot."""
        prompt = self.prompt_edit.text().strip()
        if self.mode_combo.currentIndex() == RUN:
            listing = self.listing
            if listing is None:
                raise StudioError("Choose a training run's output folder first.")
            prompts = [prompt] if prompt else [str(p) for p in listing.sample.get("prompts", [])]
            prompts = prompts or [self._default_prompt()]
            sample = listing.sample
            return GridPlan(self._request(prompts[0], sample.get("cfg", 7.0),
                                          sample.get("sampler", SAMPLER),
                                          sample.get("negative_prompt", "")),
                            listing=listing, strength=self.strength_spin.value(),
                            prompts=prompts, best_step=self.best_step)
        rows = self._axis(self.rows_combo, self.rows_edit, "Rows")
        if rows is None:
            raise StudioError("Stack a LoRA first: the grid shows a stacked LoRA's strengths.")
        cols = self._axis(self.cols_combo, self.cols_edit, "Columns")
        if cols is not None and cols[0] == rows[0]:
            raise StudioError("Columns: pick another LoRA than the rows' (or none).")
        return GridPlan(self._request(prompt or self._default_prompt()), rows=rows, cols=cols)

    def render(self) -> bool:
        try:
            plan = self.plan()
        except StudioError as exc:
            self._say_problem(exc.user_message())
            return False
        self._say_problem("")
        started = self.grid.start(plan)
        self._update_buttons()
        return started

    # ------------------------------------------------------------------ internals
    def _request(self, prompt: str, cfg: float = 7.0, sampler: str = SAMPLER,
                 negative: str = "") -> GenerationRequest:
        return GenerationRequest(prompt, negative=str(negative), steps=self.steps_spin.value(),
                                 cfg=float(cfg), seed=self.seed_spin.value(),
                                 sampler=str(sampler), count=1)

    def _axis(self, combo: QComboBox, edit: QLineEdit, field: str):
        path = combo.currentData()
        if path is None:
            return None
        entry = self.model.entry(path)
        return Path(path), entry.name if entry else Path(path).stem, parse_strengths(
            edit.text(), field)

    def _base_note(self, listing: RunListing) -> str:
        """A warning when the run was trained on another base model than the one in use."""
        trained_on = normal_spec(listing.config.get("model", {}).get("base"))
        if "model" not in listing.config or trained_on == normal_spec(self.model.base_model):
            return ""
        return (f" It was trained on {short_label(trained_on)}; the grid renders on "
                f"{short_label(self.model.base_model)} (the base model at the top right).")

    def _use_run_settings(self, listing: RunListing) -> None:
        sample = listing.sample
        if isinstance(sample.get("seed"), int):
            self.seed_spin.setValue(sample["seed"])
        if isinstance(sample.get("steps"), int):
            self.steps_spin.setValue(sample["steps"])

    def _sync_loras(self) -> None:
        stack = self.model.stack
        for combo, extra in ((self.rows_combo, None), (self.cols_combo, NO_COLUMNS)):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            if extra:
                combo.addItem(extra, None)
            for entry in stack:
                combo.addItem(entry.name, str(entry.path))
            combo.setCurrentIndex(max(0, combo.findData(current)))  # kept, else the first
            combo.blockSignals(False)
        self.cols_edit.setEnabled(self.cols_combo.currentData() is not None)
        self._update_buttons()

    def _mode_changed(self, index: int) -> None:
        self.pages.setCurrentIndex(index)
        for i in range(self.pages.count()):  # the stack is as tall as the page shown
            self.pages.widget(i).setSizePolicy(
                QSizePolicy.Preferred, QSizePolicy.Preferred if i == index else QSizePolicy.Ignored)
        self._say_problem("")
        self._update_buttons()

    def _on_started(self) -> None:
        self.view.set_grid(*self.grid.view_labels)
        self.view.set_highlight(self.grid.highlight)
        self._update_buttons()

    def _on_finished(self, _terminal: ev.Event) -> None:
        self._update_buttons()

    def _say_problem(self, text: str) -> None:
        self.problem_label.setText(text)
        self.problem_label.setVisible(bool(text))

    def update_prompt_hint(self) -> None:
        """The prompt field's placeholder says what an empty prompt renders."""
        prompts = self.listing.sample.get("prompts", []) if self.listing is not None else []
        if self.mode_combo.currentIndex() == RUN and prompts:
            text = (f"Empty: the run's {len(prompts)} preview prompts, one row each"
                    if len(prompts) > 1 else f"Empty: the run's preview prompt “{prompts[0]}”")
        else:
            default = self._default_prompt()
            text = f"Empty: “{default}” (the live preview's)" if default else \
                "Empty: no prompt (the live preview's is empty)"
        self.prompt_edit.setPlaceholderText(text)

    def _update_buttons(self) -> None:
        running = self.grid.is_running
        self.update_prompt_hint()
        self.render_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.save_button.setEnabled(not running and self.grid.cells_done > 0)

    def _choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A training run's output folder",
                                                  self.run_edit.text())
        if folder:
            self.set_run_folder(folder)

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the grid", str(Path.home() / "grid.png"),
                                              "PNG images (*.png)")
        if path:
            try:
                saved = self.grid.save_png(path)
            except (OSError, StudioError) as exc:
                self._say_problem(f"Not saved: {exc}")
            else:
                self.status_label.setText(f"Saved {saved}")


def _pair(first: QWidget, second: QWidget, second_stretch: int = 1) -> QWidget:
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(first, 1)
    row.addWidget(second, second_stretch)
    return _holder(row)


def _holder(layout) -> QWidget:
    widget = QWidget()
    layout.setContentsMargins(0, 0, 0, 0)
    widget.setLayout(layout)
    return widget


def _spin(spin, low, high, value):
    spin.setRange(low, high)
    spin.setValue(value)
    return spin
