"""One LoRA of the stack: on/off box, name, strength slider with a numeric field, remove, and
a "Blocks" toggle that opens the per-block strengths (`BlockWeightsEditor`) under the row.

The slider and the field show the same value (-2..2 in steps of 0.05; the field also takes
values typed between steps, rounded to 0.01). The row only reports what the user does
(`weight_changed(path, w)`, `enabled_changed(path, on)`, `block_weights_changed(path, bw)`,
`start_changed(path, share)`, `remove_requested(path)`); the Mix tab passes it on to the
SessionModel. "Starts at" holds a LoRA back for the first share of the steps (a texture or
style LoRA started late leaves the layout to the others). The toggle names the
block weights in use ("Blocks: OUTALL"), so they show while the editor is closed.
`set_problem(text)` marks a file the model refused.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)

from lora_studio.core.lora.block_weights import BlockWeights
from lora_studio.ui.widgets.block_weights_editor import BlockWeightsEditor

WEIGHT_MIN, WEIGHT_MAX, WEIGHT_STEP = -2.0, 2.0, 0.05
_TICKS = 100  # slider units per 1.0 of strength


class LoraStackRow(QFrame):
    weight_changed = Signal(object, float)
    enabled_changed = Signal(object, bool)
    block_weights_changed = Signal(object, object)  # path, BlockWeights | None
    start_changed = Signal(object, float)  # path, share of the steps (0..0.95)
    remove_requested = Signal(object)

    def __init__(self, path: Path, name: str, weight: float = 1.0, enabled: bool = True,
                 detail: str = "", block_weights: BlockWeights | None = None,
                 start: float = 0.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("StackRow")
        self.path = Path(path)
        self.enabled_box = QCheckBox()
        self.enabled_box.setToolTip("Use this LoRA (off: rendered as if it were not stacked)")
        self.name_label = QLabel(name)
        self.name_label.setObjectName("StackRowName")
        self.name_label.setToolTip(str(self.path))
        self.detail_label = QLabel(detail)
        self.detail_label.setObjectName("HintLabel")
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(int(WEIGHT_MIN * _TICKS), int(WEIGHT_MAX * _TICKS))
        self.slider.setSingleStep(int(WEIGHT_STEP * _TICKS))
        self.slider.setPageStep(int(0.25 * _TICKS))
        self.slider.setTickInterval(_TICKS)
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setToolTip("Strength (-2 to 2). 1 = as trained, 0 = off, negative = the "
                               "opposite of what it learned.")
        self.spin = QDoubleSpinBox()
        self.spin.setRange(WEIGHT_MIN, WEIGHT_MAX)
        self.spin.setSingleStep(WEIGHT_STEP)
        self.spin.setDecimals(2)
        self.spin.setAlignment(Qt.AlignRight)
        self.spin.setMinimumWidth(72)
        self.spin.setToolTip(self.slider.toolTip())
        self.remove_button = QToolButton()
        self.remove_button.setText("✕")
        self.remove_button.setToolTip("Remove from the stack (the file stays in the library)")
        self.problem_label = QLabel("")
        self.problem_label.setObjectName("ProblemLabel")
        self.problem_label.setWordWrap(True)
        self.problem_label.hide()
        self.blocks_button = QToolButton()
        self.blocks_button.setCheckable(True)
        self.blocks_button.setToolTip("Strength per UNet block and for the text encoder "
                                      "(A1111 LoRA Block Weight)")
        self.blocks_editor = BlockWeightsEditor(block_weights)
        self.blocks_editor.hide()
        self.start_spin = QSpinBox()
        self.start_spin.setRange(0, 95)
        self.start_spin.setSingleStep(5)
        self.start_spin.setSuffix(" % of steps")
        self.start_spin.setPrefix("Starts at ")
        self.start_spin.setToolTip(
            "Hold the LoRA back for the first part of the denoising steps. 0 % = from the "
            "first step. A texture or style LoRA started at 40-50 % leaves the layout (a "
            "shape another LoRA draws) alone and still adds its look.")

        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(2)
        grid.addWidget(self.enabled_box, 0, 0)
        grid.addWidget(self.name_label, 0, 1)
        grid.addWidget(self.detail_label, 0, 2, 1, 2, Qt.AlignRight)
        grid.addWidget(self.remove_button, 0, 4)
        grid.addWidget(self.slider, 1, 1, 1, 2)
        grid.addWidget(self.spin, 1, 3)
        grid.addWidget(self.blocks_button, 2, 1, 1, 2, Qt.AlignLeft)
        grid.addWidget(self.start_spin, 2, 2, 1, 2, Qt.AlignRight)
        grid.addWidget(self.blocks_editor, 3, 1, 1, 4)
        grid.addWidget(self.problem_label, 4, 1, 1, 4)
        grid.setColumnStretch(1, 1)

        self.set_values(weight, enabled)
        self.set_start(start)
        self._show_blocks_state()
        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self._spin_changed)
        self.enabled_box.toggled.connect(self._toggled)
        self.blocks_button.toggled.connect(self.set_blocks_open)
        self.blocks_editor.changed.connect(self._blocks_edited)
        self.start_spin.valueChanged.connect(
            lambda percent: self.start_changed.emit(self.path, percent / 100))
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self.path))

    @property
    def weight(self) -> float:
        return round(self.spin.value(), 2)

    def set_values(self, weight: float, enabled: bool) -> None:
        """Show `weight` / `enabled` without reporting them back."""
        for widget in (self.slider, self.spin, self.enabled_box):
            widget.blockSignals(True)
        self.spin.setValue(weight)
        self.slider.setValue(round(weight * _TICKS))
        self.enabled_box.setChecked(enabled)
        for widget in (self.slider, self.spin, self.enabled_box):
            widget.blockSignals(False)
        self._show_enabled(enabled)

    @property
    def start(self) -> float:
        return self.start_spin.value() / 100

    def set_start(self, start: float) -> None:
        """Show `start` (a share of the steps) without reporting it back."""
        self.start_spin.blockSignals(True)
        self.start_spin.setValue(round(start * 100))
        self.start_spin.blockSignals(False)

    @property
    def block_weights(self) -> BlockWeights | None:
        return self.blocks_editor.weights

    def set_block_weights(self, weights: BlockWeights | None) -> None:
        """Show `weights` without reporting them back."""
        self.blocks_editor.set_weights(weights)
        self._show_blocks_state()

    def set_blocks_open(self, on: bool) -> None:
        """Open or close the block weights editor under the row."""
        self.blocks_button.blockSignals(True)
        self.blocks_button.setChecked(on)
        self.blocks_button.blockSignals(False)
        self.blocks_editor.setVisible(on)
        self._show_blocks_state()

    def _blocks_edited(self, weights: BlockWeights | None) -> None:
        self._show_blocks_state()
        self.block_weights_changed.emit(self.path, weights)

    def _show_blocks_state(self) -> None:
        weights = self.blocks_editor.weights
        name = "" if weights is None else f": {weights.preset or 'custom'}"
        arrow = "▾" if self.blocks_button.isChecked() else "▸"
        self.blocks_button.setText(f"Blocks{name} {arrow}")

    def set_problem(self, text: str | None) -> None:
        self.problem_label.setText(f"⚠ {text}" if text else "")
        self.problem_label.setVisible(bool(text))

    def _slider_moved(self, value: int) -> None:
        weight = round(value / _TICKS / WEIGHT_STEP) * WEIGHT_STEP  # snap to 0.05
        self.spin.blockSignals(True)
        self.spin.setValue(weight)
        self.spin.blockSignals(False)
        self.weight_changed.emit(self.path, round(weight, 2))

    def _spin_changed(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(value * _TICKS))
        self.slider.blockSignals(False)
        self.weight_changed.emit(self.path, round(value, 2))

    def _toggled(self, on: bool) -> None:
        self._show_enabled(on)
        self.enabled_changed.emit(self.path, on)

    def _show_enabled(self, on: bool) -> None:
        self.slider.setEnabled(on)
        self.spin.setEnabled(on)
        self.blocks_editor.setEnabled(on)
        self.start_spin.setEnabled(on)
        self.name_label.setEnabled(on)
