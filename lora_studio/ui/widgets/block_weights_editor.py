"""The per-LoRA block weights editor: a preset, the 17 numbers as text, and one box per block.

The boxes sit in the UNet's U shape, so where a number acts is visible: the text encoder
(BASE) first, the IN blocks going down on the left (outer → deep), MID at the bottom, the OUT
blocks coming back up on the right. The text field shows the A1111 "LoRA Block Weight" numbers
(`core.lora.block_weights`) and takes numbers or a preset name; what it cannot read is said
under it and nothing changes. Every change the user makes is reported as `changed(weights)`:
a `BlockWeights`, or None for all ones (the plain strength).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.errors import StudioError
from lora_studio.core.lora.block_weights import (
    PRESET_LABELS,
    PRESETS,
    BlockWeights,
    normalized,
)

FACTOR_MIN, FACTOR_MAX, FACTOR_STEP = -5.0, 5.0, 0.1
CUSTOM = "Custom"
# (row, column) of each block in the U: rows are depth (outer → deep), BASE and MID apart.
_CELLS = {
    "BASE": (0, 0),
    "IN01": (0, 1), "IN02": (0, 2), "IN04": (1, 1), "IN05": (1, 2), "IN07": (2, 1), "IN08": (2, 2),
    "MID": (2, 3),
    "OUT09": (0, 4), "OUT10": (0, 5), "OUT11": (0, 6),
    "OUT06": (1, 4), "OUT07": (1, 5), "OUT08": (1, 6),
    "OUT03": (2, 4), "OUT04": (2, 5), "OUT05": (2, 6),
}
_TIPS = {"BASE": "BASE: the text encoder", "MID": "MID: the UNet's middle block"}


class BlockWeightsEditor(QFrame):
    changed = Signal(object)  # BlockWeights | None

    def __init__(self, weights: BlockWeights | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("BlockWeightsEditor")
        self._weights = BlockWeights.ones()
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("A1111 LoRA Block Weight presets (NO_TE and STYLE are "
                                     "LoRA Studio's)")
        self.preset_combo.addItem(CUSTOM, None)
        for name in PRESETS:
            self.preset_combo.addItem(f"{name} — {PRESET_LABELS[name]}", name)
        self.text_edit = QLineEdit()
        self.text_edit.setToolTip("The 17 numbers BASE, IN01, IN02, IN04, IN05, IN07, IN08, "
                                  "MID, OUT03 … OUT11 (as in <lora:name:1:lbw=...>), or a "
                                  "preset name")
        self.error_label = QLabel("")
        self.error_label.setObjectName("ProblemLabel")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.spins: dict[str, QDoubleSpinBox] = {}

        grid = QGridLayout()
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(0)
        for block, (row, col) in _CELLS.items():
            caption = QLabel("TE" if block == "BASE" else block)
            caption.setObjectName("BlockCaption")
            caption.setAlignment(Qt.AlignCenter)
            spin = self._make_spin(block)
            grid.addWidget(caption, row * 2, col, Qt.AlignBottom)
            grid.addWidget(spin, row * 2 + 1, col)
            self.spins[block] = spin
        grid.setColumnMinimumWidth(3, 46)  # MID's column stays open above it: the U
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 2)
        layout.setSpacing(4)
        layout.addWidget(self.preset_combo)
        layout.addWidget(self.text_edit)
        layout.addWidget(self.error_label)
        layout.addLayout(grid)

        self.set_weights(weights)
        self.preset_combo.activated.connect(self._preset_chosen)
        self.text_edit.editingFinished.connect(self._text_entered)

    def _make_spin(self, block: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(FACTOR_MIN, FACTOR_MAX)
        spin.setSingleStep(FACTOR_STEP)
        spin.setDecimals(2)
        spin.setButtonSymbols(QAbstractSpinBox.NoButtons)  # compact: type, wheel or arrow keys
        spin.setAlignment(Qt.AlignCenter)
        spin.setFixedWidth(46)
        spin.setKeyboardTracking(False)
        spin.setToolTip(_TIPS.get(block, block) + " (a factor on the strength)")
        spin.valueChanged.connect(lambda value, b=block: self._spin_changed(b, value))
        return spin

    # ------------------------------------------------------------------ value
    @property
    def weights(self) -> BlockWeights | None:
        """What is shown: None when every factor is 1."""
        return normalized(self._weights)

    def set_weights(self, weights: BlockWeights | None) -> None:
        """Show `weights` (None: all ones) without reporting them back."""
        self._weights = weights or BlockWeights.ones()
        self._show()

    def _show(self) -> None:
        widgets = [self.preset_combo, *self.spins.values()]
        for widget in widgets:
            widget.blockSignals(True)
        preset = self._weights.preset
        self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findData(preset)))
        self.text_edit.setText(self._weights.numbers())
        self.text_edit.setCursorPosition(0)
        for block, spin in self.spins.items():
            spin.setValue(self._weights[block])
        for widget in widgets:
            widget.blockSignals(False)

    def _set_from_user(self, weights: BlockWeights) -> None:
        self.error_label.hide()
        changed = weights != self._weights
        self._weights = weights
        self._show()
        if changed:
            self.changed.emit(self.weights)

    # ------------------------------------------------------------------ user input
    def _preset_chosen(self, index: int) -> None:
        name = self.preset_combo.itemData(index)
        if name is not None:
            self._set_from_user(BlockWeights.preset_named(name))
        else:
            self._show()  # "Custom" is what other numbers show; choosing it changes nothing

    def _text_entered(self) -> None:
        text = self.text_edit.text()
        if text.strip() == self._weights.numbers():
            self.error_label.hide()
            return
        try:
            weights = BlockWeights.parse(text)
        except StudioError as exc:
            self.error_label.setText(f"⚠ {exc.what}")
            self.error_label.setToolTip(exc.fix)
            self.error_label.show()
            return
        self._set_from_user(weights)

    def _spin_changed(self, block: str, value: float) -> None:
        self._set_from_user(self._weights.replaced(block, round(value, 2)))

