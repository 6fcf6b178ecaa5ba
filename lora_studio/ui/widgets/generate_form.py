"""The Generate tab's settings, A1111-style: prompt, negative prompt, sampler + schedule type,
steps, CFG scale, seed (🎲 random / ♻ reuse), width × height and batch count.

`to_request()` builds a `GenerationRequest` (seed -1 or empty → random; width/height "Auto" →
the model's native size). `apply_parameters(parse_parameters(text))` fills the fields from an
A1111 "PNG Info" text and returns notes about what could not be used (an unknown sampler keeps
the current one). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, QRectF, QRegularExpression, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap, QRegularExpressionValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.errors import ConfigError, StudioError
from lora_studio.core.generate.samplers import resolve_sampler, sampler_names, schedule_type_names
from lora_studio.core.generate.session import GenerationRequest

DEFAULT_SAMPLER = "Euler a"
AUTO_SIZE_TEXT = "Auto"
MAX_SEED = 2**63 - 1


def dice_icon(size: int = 18) -> QIcon:
    """A die showing five (drawn, so it looks the same with or without an emoji font)."""
    pixmap = QPixmap(size * 2, size * 2)
    pixmap.fill(Qt.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.Antialiasing)
    s = size * 2
    painter.setPen(QColor("#c8ccd0"))
    painter.setBrush(QColor("#e8eaed"))
    painter.drawRoundedRect(QRectF(2, 2, s - 4, s - 4), s * 0.2, s * 0.2)
    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor("#d64545"))
    r = s * 0.085
    for x, y in ((0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.7, 0.7)):
        painter.drawEllipse(QPointF(s * x, s * y), r, r)
    painter.end()
    pixmap.setDevicePixelRatio(2.0)
    return QIcon(pixmap)


class SizeSpin(QSpinBox):
    """Width or height in pixels: "Auto" (the model's own size) or a multiple of 8."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, 4096)
        self.setSingleStep(64)
        self.setSpecialValueText(AUTO_SIZE_TEXT)
        self.setSuffix(" px")
        self.setToolTip("Auto: the model's native size (512 for SD 1.x, 1024 for SDXL, 64 for "
                        "the built-in tiny model). Otherwise a multiple of 8.")
        self.editingFinished.connect(self._snap)

    def pixels(self) -> int | None:
        return self.value() or None

    def set_auto_size(self, pixels: int | None) -> None:
        """Show what "Auto" means for the current model once known: "Auto (512)"."""
        self.setSpecialValueText(f"{AUTO_SIZE_TEXT} ({pixels})" if pixels else AUTO_SIZE_TEXT)

    def _snap(self) -> None:
        if self.value() % 8:
            self.setValue(max(8, round(self.value() / 8) * 8))


class GenerateForm(QWidget):
    """Every setting of one render; emits `changed()` when one is edited."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("GenerateForm")
        self._last_seed: int | None = None
        self.prompt_edit = _text_edit("Prompt — e.g. a lighthouse at dusk, oil painting. "
                                      "<lora:name:0.8> sets a LoRA's strength for one render.", 86)
        self.negative_edit = _text_edit("Negative prompt — what to keep out, e.g. blurry", 52)

        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems(sampler_names())
        self.sampler_combo.setCurrentText(DEFAULT_SAMPLER)
        self.sampler_combo.setToolTip("The sampler, by its AUTOMATIC1111 name.")
        self.schedule_combo = QComboBox()
        self.schedule_combo.addItems(schedule_type_names())
        self.schedule_combo.setToolTip("Schedule type (A1111 ≥ 1.9): Automatic is the sampler's "
                                       "own; Karras suits the DPM++ samplers.")
        self.steps_spin = _spin(1, 150, 20, "Sampling steps.")
        self.cfg_spin = QDoubleSpinBox()
        self.cfg_spin.setRange(0.0, 30.0)
        self.cfg_spin.setSingleStep(0.5)
        self.cfg_spin.setDecimals(1)
        self.cfg_spin.setValue(7.0)
        self.cfg_spin.setToolTip("CFG scale: how strongly the prompt steers the image.")
        self.width_spin, self.height_spin = SizeSpin(), SizeSpin()
        self.count_spin = _spin(1, 64, 1, "Batch count: images per click; image i uses seed + i.")

        self.seed_edit = QLineEdit("-1")
        self.seed_edit.setValidator(QRegularExpressionValidator(
            QRegularExpression(r"-1|-|\d{0,19}"), self.seed_edit))
        self.seed_edit.setPlaceholderText("-1 = random")
        self.seed_edit.setToolTip("-1 (or empty): a new random seed each time. The same seed "
                                  "and settings give the same image.")
        self.random_seed_button = QToolButton()
        self.random_seed_button.setIcon(dice_icon())
        self.random_seed_button.setAccessibleName("🎲 Random seed")
        self.random_seed_button.setToolTip("Random seed (-1)")
        self.random_seed_button.clicked.connect(lambda: self.seed_edit.setText("-1"))
        self.reuse_seed_button = QToolButton()
        self.reuse_seed_button.setText("♻")
        self.reuse_seed_button.setToolTip("Reuse the seed of the last (or selected) image")
        self.reuse_seed_button.setEnabled(False)
        self.reuse_seed_button.clicked.connect(self.reuse_last_seed)

        grid = QFormLayout()
        grid.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        grid.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        grid.addRow("Sampler", _row(self.sampler_combo, QLabel("Schedule"), self.schedule_combo))
        grid.addRow("Steps", _row(self.steps_spin, QLabel("CFG scale"), self.cfg_spin))
        grid.addRow("Size", _row(self.width_spin, QLabel("×"), self.height_spin))
        grid.addRow("Seed", _row(self.seed_edit, self.random_seed_button,
                                 self.reuse_seed_button, stretch_first=True))
        grid.addRow("Batch count", _row(self.count_spin, stretch_first=False))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        for caption, edit in (("Prompt", self.prompt_edit),
                              ("Negative prompt", self.negative_edit)):
            label = QLabel(caption)
            label.setObjectName("FieldCaption")
            label.setBuddy(edit)
            layout.addWidget(label)
            layout.addWidget(edit)
        layout.addSpacing(4)
        layout.addLayout(grid)
        for signal in (self.prompt_edit.textChanged, self.negative_edit.textChanged,
                       self.seed_edit.textChanged, self.sampler_combo.currentTextChanged,
                       self.schedule_combo.currentTextChanged, self.steps_spin.valueChanged,
                       self.cfg_spin.valueChanged, self.width_spin.valueChanged,
                       self.height_spin.valueChanged, self.count_spin.valueChanged):
            signal.connect(self.changed)

    # ------------------------------------------------------------------ seed
    def seed(self) -> int | None:
        """The seed asked for; None means random (-1 or empty)."""
        text = self.seed_edit.text().strip()
        if text in ("", "-", "-1"):
            return None
        value = int(text)
        if value > MAX_SEED:
            raise ConfigError("generate.seed", f"{value} is too large.",
                              f"Use at most {MAX_SEED}, or -1 for random.")
        return value

    def set_last_seed(self, seed: int | None) -> None:
        """The seed ♻ puts back (the last or the selected image's)."""
        self._last_seed = seed
        self.reuse_seed_button.setEnabled(seed is not None and self.isEnabled())

    @property
    def last_seed(self) -> int | None:
        return self._last_seed

    def reuse_last_seed(self) -> None:
        if self._last_seed is not None:
            self.seed_edit.setText(str(self._last_seed))

    # ------------------------------------------------------------------ request
    def to_request(self, out_dir=None) -> GenerationRequest:
        return GenerationRequest(
            prompt=self.prompt_edit.toPlainText().strip(),
            negative=self.negative_edit.toPlainText().strip(),
            steps=self.steps_spin.value(),
            cfg=round(self.cfg_spin.value(), 2),
            seed=self.seed(),
            width=self.width_spin.pixels(),
            height=self.height_spin.pixels(),
            sampler=self.sampler_combo.currentText(),
            schedule_type=self.schedule_combo.currentText(),
            count=self.count_spin.value(),
            out_dir=out_dir,
        )

    def settings_dict(self) -> dict[str, Any]:
        """The fields as `apply_parameters` takes them (kept between runs of the app)."""
        seed = self.seed_edit.text().strip()
        return {"prompt": self.prompt_edit.toPlainText(),
                "negative_prompt": self.negative_edit.toPlainText(),
                "steps": self.steps_spin.value(), "cfg": round(self.cfg_spin.value(), 2),
                "seed": int(seed) if seed.lstrip("-").isdigit() else -1,
                "width": self.width_spin.value(), "height": self.height_spin.value(),
                "sampler": self.sampler_combo.currentText(),
                "schedule_type": self.schedule_combo.currentText(),
                "count": self.count_spin.value()}

    def apply_parameters(self, params: dict[str, Any]) -> list[str]:
        """Fill the fields from `pnginfo.parse_parameters` output; fields it lacks stay. Returns
        notes for the user (values that could not be used and what was kept instead)."""
        notes: list[str] = []
        if params.get("prompt") is not None:
            self.prompt_edit.setPlainText(params["prompt"])
        if params.get("negative_prompt") is not None:
            self.negative_edit.setPlainText(params["negative_prompt"])
        for key, spin in (("steps", self.steps_spin), ("cfg", self.cfg_spin)):
            value = params.get(key)
            if value is not None:
                if not spin.minimum() <= value <= spin.maximum():
                    notes.append(f"{key.capitalize()} {value:g} is out of range; "
                                 f"using {min(max(value, spin.minimum()), spin.maximum()):g}.")
                spin.setValue(value)
        if params.get("seed") is not None:
            self.seed_edit.setText(str(params["seed"]) if params["seed"] >= 0 else "-1")
        for key, spin in (("width", self.width_spin), ("height", self.height_spin)):
            if params.get(key) is not None:
                spin.setValue(params[key])
                spin._snap()
        if params.get("sampler"):
            notes += self._apply_sampler(params["sampler"], params.get("schedule_type"))
        if isinstance(params.get("count"), int):
            self.count_spin.setValue(params["count"])
        return notes

    def _apply_sampler(self, sampler: str, schedule: str | None) -> list[str]:
        try:
            resolved = resolve_sampler(sampler, schedule)
        except StudioError:
            try:
                resolved = resolve_sampler(sampler)
            except StudioError:
                return [f"Sampler “{sampler}” is not available here; kept "
                        f"“{self.sampler_combo.currentText()}”."]
            self.sampler_combo.setCurrentText(resolved.name)
            self.schedule_combo.setCurrentText(resolved.schedule_type)
            return [f"Schedule type “{schedule}” is not available here; using "
                    f"“{resolved.schedule_type}”."]
        self.sampler_combo.setCurrentText(resolved.name)
        self.schedule_combo.setCurrentText(resolved.schedule_type)
        return []

    def set_model_size(self, width: int | None, height: int | None) -> None:
        """The model's native size (None: not known yet), shown by the "Auto" size boxes."""
        self.width_spin.set_auto_size(width)
        self.height_spin.set_auto_size(height)

    def set_editable(self, editable: bool) -> None:
        self.setEnabled(editable)
        self.reuse_seed_button.setEnabled(editable and self._last_seed is not None)


def _text_edit(placeholder: str, height: int) -> QPlainTextEdit:
    edit = QPlainTextEdit()
    edit.setPlaceholderText(placeholder)
    edit.setTabChangesFocus(True)
    edit.setFixedHeight(height)
    return edit


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _row(*widgets: QWidget, stretch_first: bool = False) -> QWidget:
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(6)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if (stretch_first and i == 0) or
                         (not stretch_first and not isinstance(widget, (QLabel, QToolButton))
                          and len(widgets) > 1) else 0)
    if not stretch_first and len(widgets) == 1:
        layout.addStretch(1)
    return box
