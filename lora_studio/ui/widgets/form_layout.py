"""Layout of a generated settings form: group boxes of field editors in two columns, and the
"Advanced settings" expander.

`group_box(title, editors, info)` puts narrow editors (numbers, choices, check boxes) two to a
row, each behind its label, and wide ones (text, folders, lists) on a row of their own; `info`
rows (label, widget, tooltip) come first, full width.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lora_studio.ui.widgets.config_fields import CheckEditor, FieldEditor, FieldSpec


def label_width(widget: QWidget, specs: Iterable[FieldSpec]) -> int:
    """The width of the longest label of the fields outside the Advanced settings (check
    boxes carry theirs), so that the columns of every box line up (a longer label widens its
    own box's column)."""
    metrics = widget.fontMetrics()
    return max((metrics.horizontalAdvance(s.label) for s in specs
                if not isinstance(s.default, bool) and not s.advanced), default=60) + 4


def group_box(title: str, editors: Sequence[FieldEditor],
              info: Iterable[tuple[str, QWidget, str]] = (), label_px: int = 0) -> QGroupBox:
    """A titled box of `editors` (see the module text); label columns `label_px` wide."""
    grid = QGridLayout()
    grid.setHorizontalSpacing(8)
    grid.setVerticalSpacing(5)
    grid.setColumnStretch(1, 1)
    grid.setColumnStretch(3, 1)
    grid.setColumnMinimumWidth(0, label_px)
    grid.setColumnMinimumWidth(2, label_px)
    row = 0
    for text, widget, tip in info:
        grid.addWidget(_label(text, tip), row, 0)
        grid.addWidget(widget, row, 1, 1, 3)
        row += 1
    column = 0
    for editor in editors:
        if editor.wide:
            if column:
                row, column = row + 1, 0
            grid.addWidget(_label(editor.spec.label, editor.spec.tooltip), row, 0)
            grid.addWidget(editor.holder, row, 1, 1, 3)
            row += 1
            continue
        if isinstance(editor, CheckEditor):
            grid.addWidget(editor.holder, row, column + 1)  # its text is its label
        else:
            grid.addWidget(_label(editor.spec.label, editor.spec.tooltip), row, column)
            grid.addWidget(editor.holder, row, column + 1)
        column += 2
        if column == 4:
            row, column = row + 1, 0
    box = QGroupBox(title)
    box.setLayout(grid)
    return box


class AdvancedExpander(QWidget):
    """A "▸ Advanced settings" button that shows or hides the boxes added to it (closed)."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.button = QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.button.setArrowType(Qt.RightArrow)
        self.button.setAutoRaise(True)
        self.button.setToolTip("Settings most runs leave as they are: bucket sizes, caption "
                               "dropout, optimizer, seeds, checkpoints...")
        self.button.toggled.connect(self.set_open)
        self.body = QWidget()
        self._body_layout = QVBoxLayout(self.body)
        self._body_layout.setContentsMargins(0, 0, 0, 0)
        self._body_layout.setSpacing(4)
        self.body.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.button, 0, Qt.AlignLeft)
        layout.addWidget(self.body)

    def add(self, box: QGroupBox) -> None:
        self._body_layout.addWidget(box)

    @property
    def is_open(self) -> bool:
        return self.button.isChecked()

    def set_open(self, shown: bool) -> None:
        if self.button.isChecked() != shown:
            self.button.setChecked(shown)  # comes back here through toggled
            return
        self.button.setArrowType(Qt.DownArrow if shown else Qt.RightArrow)
        self.body.setVisible(shown)


def _label(text: str, tip: str) -> QLabel:
    label = QLabel(text)
    label.setToolTip(tip)
    label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
    return label


__all__ = ["AdvancedExpander", "group_box"]
