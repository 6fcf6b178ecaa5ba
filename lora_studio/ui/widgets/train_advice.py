"""The rank and steps advice shown before Start: the kind of concept, the advised values (beside
the current ones) with the rules behind them, and an Apply button.

A thin view of `core/train/advisor.py`: the Train tab calls `set_dataset(images, arch)` when the
dataset or base model changes and `set_current(cfg)` when the settings change, and connects
`apply_requested(dict)` (dotted config key -> value, e.g. {"lora.rank": 8}) to its form.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextDocumentFragment
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.errors import StudioError
from lora_studio.core.train.advisor import (
    CONCEPT_HELP,
    CONCEPT_LABELS,
    CONCEPTS,
    SOURCES,
    Advice,
    advise,
    concept_kind,
    value_rows,
)
from lora_studio.core.train.config import TrainConfig

NO_DATASET = "Advice appears once the dataset has usable images."


class TrainAdvicePanel(QGroupBox):
    """Emits `apply_requested(dict)` with the advised values when Apply is clicked."""

    apply_requested = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Rank and steps advice", parent)
        self.setObjectName("TrainAdvicePanel")
        self.advice: Advice | None = None
        self._images, self._images_per_epoch, self._arch = 0, None, "sd1"
        self._current: TrainConfig | None = None
        self.concept_combo = QComboBox()
        self.concept_combo.setObjectName("AdviceConcept")
        for kind in CONCEPTS:
            self.concept_combo.addItem(CONCEPT_LABELS[kind], kind)
            self.concept_combo.setItemData(self.concept_combo.count() - 1,
                                           CONCEPT_HELP[kind].capitalize(), Qt.ToolTipRole)
        self.concept_combo.setToolTip("What the LoRA teaches: it sets the rank band and the "
                                      "number of images seen.")
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Set the advised values in the settings.")
        self.values_label = self._label("AdviceValues")
        self.reasons_label = self._label("HintLabel")
        self.reasons_label.setToolTip("Where each rule comes from (the README's \"Rank and "
                                      "steps advisor\" says more):\n" + "\n".join(
                                          f"[{tag}] {text}" for tag, text in SOURCES.items()))
        row = QHBoxLayout()
        row.addWidget(QLabel("Teaches"))
        row.addWidget(self.concept_combo)
        row.addStretch(1)
        row.addWidget(self.apply_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.values_label)
        layout.addWidget(self.reasons_label)
        self.concept_combo.currentIndexChanged.connect(lambda _index: self.refresh())
        self.apply_button.clicked.connect(self._apply)
        self.refresh()

    @staticmethod
    def _label(name: str) -> QLabel:
        label = QLabel()
        label.setObjectName(name)
        label.setWordWrap(True)
        label.setTextFormat(Qt.RichText)
        label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        return label

    # ------------------------------------------------------------------ API
    @property
    def concept(self) -> str:
        return self.concept_combo.currentData()

    def set_concept(self, concept: str) -> None:
        """"style", "subject" or "concept" (or an alias such as "character")."""
        self.concept_combo.setCurrentIndex(self.concept_combo.findData(concept_kind(concept)))

    def set_dataset(self, images: int, arch: str, images_per_epoch: int | None = None) -> None:
        """The dataset's usable images (and per epoch, with repeats) and the base's family."""
        self._images, self._arch, self._images_per_epoch = images, arch, images_per_epoch
        self.refresh()

    def set_current(self, cfg: TrainConfig | None) -> None:
        """The settings the advice is compared with (and whose batch size it counts with)."""
        self._current = cfg
        self.refresh()

    def shown_text(self) -> str:
        """What the panel says, as plain text (the values, then the reasons)."""
        return "\n".join(QTextDocumentFragment.fromHtml(label.text()).toPlainText()
                         for label in (self.values_label, self.reasons_label)
                         ).replace("\xa0", " ")

    # ------------------------------------------------------------------ view
    def refresh(self) -> None:
        self.advice = None
        if self._images < 1:
            self._show(NO_DATASET, "")
            return
        try:
            self.advice = advise(self._images, self.concept, self._arch,
                                 images_per_epoch=self._images_per_epoch, current=self._current)
        except StudioError as exc:
            self._show(html.escape(exc.what), html.escape(exc.fix))
            return
        rows = value_rows(self.advice, self._current)
        values = "&nbsp;&nbsp; ".join(_value_html(name, now, value) for name, now, value in rows)
        reasons = "".join(
            f"<p style='margin:0 0 4px 0'>• {html.escape(r.rule)} → {html.escape(r.result)} "
            f"<span style='color:#7f858c'>[{html.escape(', '.join(r.sources))}]</span></p>"
            for r in self.advice.reasons)
        self._show(values, reasons)

    def _show(self, values: str, reasons: str) -> None:
        self.values_label.setText(values)
        self.reasons_label.setText(reasons)
        self.reasons_label.setVisible(bool(reasons))
        changes = self.advice is not None and (self._current is None
                                               or bool(self.advice.changes(self._current)))
        self.apply_button.setEnabled(changes)
        if self.advice is not None and not changes:
            self.apply_button.setToolTip("The settings already are as advised.")
        else:
            self.apply_button.setToolTip("Set the advised values in the settings.")

    def _apply(self) -> None:
        if self.advice is not None:
            self.apply_requested.emit(dict(self.advice.values))


def _value_html(name: str, now: str | None, value: str) -> str:
    """"Rank 32 → <b>8</b>", kept on one line."""
    if now is None or now == value:
        return f"{html.escape(name)}&nbsp;<b>{html.escape(value)}</b>"
    return f"{html.escape(name)}&nbsp;{html.escape(now)}&nbsp;→&nbsp;<b>{html.escape(value)}</b>"
