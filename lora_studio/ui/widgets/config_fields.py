"""One editor widget per `TrainConfig` field, made from the field's metadata in `config.py`.

`config_fields()` lists every field of every section as a `FieldSpec` (its default, help text,
label, group, choices, range...). `make_editor(spec)` picks the widget by the field's type and
metadata: a bool is a check box, an int a spin box, a float a double spin box (a learning rate a
line edit read as a number, so 1e-4 stays 1e-4), a value with choices a combo box, a folder a
line edit with Browse, a list one item per line, any other text a line edit. Every editor has
`value()`, `set_value(v)` and `on_change(callback)`; its tooltip is the help text followed by the
TOML key. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from lora_studio.core.errors import ConfigError
from lora_studio.core.train.config import SECTIONS

INT_RANGE = (0, 2**31 - 1)
WIDE_CHOICE = 14  # characters: a combo box with a longer choice takes a whole row
FLOAT_RANGE = (0.0, 1e6)


@dataclass(frozen=True)
class FieldSpec:
    """A config field and what the form needs to show it (see `config._f`)."""

    key: str  # "train.steps"
    default: Any
    help: str
    label: str
    group: str = "Other"  # config.GROUPS names the groups; "Other" for a field without one
    advanced: bool = False
    choices: Any = None  # a sequence, or a function returning one
    choice_labels: dict = field(default_factory=dict)
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    special: str = ""
    unit: str = ""
    widget: str = ""  # "", "learning_rate", "folder", "prompts"
    placeholder: str = ""

    @property
    def tooltip(self) -> str:
        return f"{self.help}\n[{self.key}]".strip()

    def choice_values(self) -> list[Any]:
        values = self.choices() if callable(self.choices) else self.choices
        return list(values or ())


def config_fields() -> list[FieldSpec]:
    """Every field of every [section] of TrainConfig, in declaration order."""
    specs = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            meta = dict(f.metadata)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            names = {x.name for x in dataclasses.fields(FieldSpec)}
            extra = {k: v for k, v in meta.items() if k in names and k not in ("help", "label")}
            specs.append(FieldSpec(key=f"{section}.{f.name}", default=default,
                                   help=meta.get("help", ""),
                                   label=meta.get("label") or f.name.replace("_", " ").capitalize(),
                                   **extra))
    return specs


class WheelIfFocused:
    """A number or choice that the mouse wheel changes only once clicked, so that scrolling
    the long form over it scrolls the form instead."""

    def wheelEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()  # the scroll area gets it


class SpinBox(WheelIfFocused, QSpinBox):
    pass


class DoubleSpinBox(WheelIfFocused, QDoubleSpinBox):
    pass


class ComboBox(WheelIfFocused, QComboBox):
    pass


class FieldEditor:
    """The widget(s) of one field. `input` is the widget a person types in (tooltips, focus);
    `holder` is what goes into the layout; `wide` editors take a whole row."""

    wide = False

    def __init__(self, spec: FieldSpec) -> None:
        self.spec = spec
        self.input = self._make()
        self.input.setToolTip(spec.tooltip)
        self.holder: QWidget = self.input

    def _make(self) -> QWidget:
        raise NotImplementedError

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def on_change(self, callback: Callable[[], None]) -> None:
        raise NotImplementedError


class CheckEditor(FieldEditor):
    def _make(self) -> QWidget:
        return QCheckBox(self.spec.label)

    def value(self) -> bool:
        return self.input.isChecked()

    def set_value(self, value: Any) -> None:
        self.input.setChecked(bool(value))

    def on_change(self, callback) -> None:
        self.input.toggled.connect(lambda _checked: callback())


class IntEditor(FieldEditor):
    def _make(self) -> QWidget:
        spin = SpinBox()
        low, high = _range(self.spec, INT_RANGE)
        spin.setRange(int(low), int(high))
        spin.setSingleStep(int(self.spec.step or 1))
        _decorate_spin(spin, self.spec)
        return spin

    def value(self) -> int:
        return self.input.value()

    def set_value(self, value: Any) -> None:
        self.input.setValue(int(value))

    def on_change(self, callback) -> None:
        self.input.valueChanged.connect(lambda _value: callback())


class FloatEditor(IntEditor):
    def _make(self) -> QWidget:
        spin = DoubleSpinBox()
        low, high = _range(self.spec, FLOAT_RANGE)
        spin.setDecimals(max(2, *(_decimals(v) for v in (self.spec.step, low, self.spec.default))))
        spin.setRange(float(low), float(high))
        spin.setSingleStep(float(self.spec.step or 0.1))
        _decorate_spin(spin, self.spec)
        return spin

    def value(self) -> float:
        return float(self.input.value())

    def set_value(self, value: Any) -> None:
        self.input.setValue(float(value))


class RateEditor(FieldEditor):
    """A learning rate: typed as text ("1e-4"); with `special`, empty text means 0."""

    def _make(self) -> QWidget:
        edit = QLineEdit()
        edit.setAlignment(Qt.AlignRight)
        edit.setPlaceholderText(self.spec.special or f"{self.spec.default:g}")
        edit.setMinimumWidth(84)
        return edit

    def value(self) -> float:
        text = self.input.text().strip()
        if not text and self.spec.special:
            return 0.0
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(self.spec.key, f"must be a number such as 1e-4 or 0.0001, got "
                              f"{text!r}") from None
        if not math.isfinite(value):
            raise ConfigError(self.spec.key, f"must be a finite number, got {text!r}")
        return value

    def set_value(self, value: Any) -> None:
        self.input.setText("" if self.spec.special and not value else f"{float(value):g}")

    def on_change(self, callback) -> None:
        self.input.textChanged.connect(lambda _text: callback())


class ChoiceEditor(FieldEditor):
    """A combo box of the choices; one with long names (schedules, samplers) takes a row."""

    def _make(self) -> QWidget:
        combo = ComboBox()
        for value in self.spec.choice_values():
            text = self.spec.choice_labels.get(value) or str(value).replace("_", " ")
            combo.addItem(text, value)
        combo.setMinimumWidth(84)
        combo.setFocusPolicy(Qt.StrongFocus)
        longest = max((len(combo.itemText(i)) for i in range(combo.count())), default=0)
        self.wide = longest > WIDE_CHOICE
        return combo

    def value(self) -> Any:
        return self.input.currentData()

    def set_value(self, value: Any) -> None:
        select(self.input, value)

    def on_change(self, callback) -> None:
        self.input.currentIndexChanged.connect(lambda _index: callback())


class TextEditor(FieldEditor):
    wide = True

    def _make(self) -> QWidget:
        edit = QLineEdit()
        edit.setPlaceholderText(self.spec.placeholder)
        return edit

    def value(self) -> str:
        return self.input.text()

    def set_value(self, value: Any) -> None:
        self.input.setText(str(value))
        self.input.setCursorPosition(0)  # a long path shows its beginning

    def on_change(self, callback) -> None:
        self.input.textChanged.connect(lambda _text: callback())


class FolderEditor(TextEditor):
    """A folder: a line edit and Browse…; the value is an absolute path, or "" when empty."""

    def __init__(self, spec: FieldSpec) -> None:
        super().__init__(spec)
        self.browse = QPushButton("Browse…")
        self.browse.setToolTip(spec.tooltip)
        self.browse.clicked.connect(self._browse)
        self.holder = row(self.input, self.browse)

    def value(self) -> str:
        text = self.input.text().strip()
        return str(Path(text).expanduser().absolute()) if text else ""

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.input, f"Choose: {self.spec.label}",
                                                  self.input.text())
        if folder:
            self.input.setText(folder)


class LinesEditor(FieldEditor):
    """A list of strings, one per line (empty lines dropped)."""

    wide = True

    def _make(self) -> QWidget:
        edit = QPlainTextEdit()
        edit.setPlaceholderText(self.spec.placeholder)
        edit.setTabChangesFocus(True)
        edit.setFixedHeight(edit.fontMetrics().lineSpacing() * 2 + 16)
        return edit

    def value(self) -> list[str]:
        return [line.strip() for line in self.input.toPlainText().splitlines() if line.strip()]

    def set_value(self, value: Any) -> None:
        self.input.setPlainText("\n".join(value or []))

    def on_change(self, callback) -> None:
        self.input.textChanged.connect(callback)


def make_editor(spec: FieldSpec) -> FieldEditor:
    """The editor for `spec`, by its metadata first, then by the type of its default."""
    if spec.widget == "learning_rate":
        return RateEditor(spec)
    if spec.widget == "folder":
        return FolderEditor(spec)
    if spec.choices is not None:
        return ChoiceEditor(spec)
    if spec.widget == "prompts" or isinstance(spec.default, list):
        return LinesEditor(spec)
    if isinstance(spec.default, bool):
        return CheckEditor(spec)
    if isinstance(spec.default, int):
        return IntEditor(spec)
    if isinstance(spec.default, float):
        return FloatEditor(spec)
    return TextEditor(spec)


def select(combo: QComboBox, value: object) -> None:
    """Select the item holding `value`; a value the combo lacks (e.g. a list of target modules
    from a preset) is added as its own item, so it round-trips unchanged."""
    for i in range(combo.count()):
        if combo.itemData(i) == value:
            combo.setCurrentIndex(i)
            return
    text = ", ".join(value) if isinstance(value, list) else str(value)
    combo.addItem(f"custom: {text}", value)
    combo.setCurrentIndex(combo.count() - 1)


def row(*widgets: QWidget) -> QWidget:
    """Widgets side by side; the first one stretches."""
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(6)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if i == 0 else 0)
    return holder


def _range(spec: FieldSpec, fallback: tuple[float, float]) -> tuple[float, float]:
    low = spec.minimum if spec.minimum is not None else fallback[0]
    high = spec.maximum if spec.maximum is not None else fallback[1]
    return low, high


def _decorate_spin(spin, spec: FieldSpec) -> None:
    spin.setFocusPolicy(Qt.StrongFocus)  # not focused by the wheel
    spin.setAlignment(Qt.AlignRight)
    spin.setMinimumWidth(84)
    if spec.special:
        spin.setSpecialValueText(spec.special)
    if spec.unit:
        spin.setSuffix(f" {spec.unit}")


def _decimals(value: float | None) -> int:
    if not value:
        return 0
    text = f"{float(value):.6f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


__all__ = ["FieldSpec", "FieldEditor", "config_fields", "make_editor", "select", "row"]
