"""The Train tab's Queue panel: the queued runs (label, status, outcome) and the buttons
Add to queue, Add rank variations (8, 16, 32), Remove and Run queue / Stop queue.

It binds to a `QueueModel` (`ui/run_queue_model.py`). The settings to queue come from
`config_source()`, the tab's validated config (None when it is invalid: the tab has said why).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.train.config import TrainConfig
from lora_studio.ui.run_queue_model import RANKS, QueueModel

COLUMNS = ("Run", "Status", "Outcome")


class RunQueuePanel(QWidget):
    def __init__(self, model: QueueModel, config_source: Callable[[], TrainConfig | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("RunQueuePanel")
        self.model = model
        self._config_source = config_source
        self.list = QTreeWidget()
        self.list.setObjectName("QueueList")
        self.list.setHeaderLabels(list(COLUMNS))
        self.list.setRootIsDecorated(False)
        self.list.setSelectionMode(QAbstractItemView.ExtendedSelection)
        header = self.list.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        self.add_button = self._button("Add to queue", "Queue a run with the current settings.",
                                       self.add_current)
        ranks = ", ".join(str(r) for r in RANKS)
        self.variations_button = self._button(
            "Add rank variations", f"Queue the current settings at LoRA ranks {ranks} (each "
            "saved under its own name).", self.add_rank_variations)
        self.remove_button = self._button("Remove", "Take the selected runs off the queue.",
                                          self.remove_selected)
        self.run_button = self._button("Run queue", "Train the waiting runs one after another.",
                                       self.toggle_running)
        self.run_button.setObjectName("PrimaryButton")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.addWidget(self.list, 1)
        for left, right in ((self.add_button, self.variations_button),
                            (self.remove_button, self.run_button)):  # two rows: a narrow column
            row = QHBoxLayout()
            row.addWidget(left)
            row.addStretch(1)
            row.addWidget(right)
            layout.addLayout(row)
        model.changed.connect(self.refresh)
        self.refresh()

    def _button(self, text: str, tip: str, slot: Callable[[], object]) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(lambda: slot())
        return button

    # ------------------------------------------------------------------ actions
    def add_current(self) -> bool:
        config = self._config_source()
        if config is not None:
            self.model.add(config)
        return config is not None

    def add_rank_variations(self) -> bool:
        config = self._config_source()
        if config is not None:
            self.model.add_variations(config)
        return config is not None

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.model.remove(item.data(0, Qt.UserRole))

    def toggle_running(self) -> None:
        if self.model.running:
            self.model.stop()
        else:
            self.model.run_all()

    # ------------------------------------------------------------------ view
    def refresh(self) -> None:
        selected = {item.data(0, Qt.UserRole) for item in self.list.selectedItems()}
        self.list.clear()
        for run in self.model.runs:
            item = QTreeWidgetItem([run.label, run.status, run.outcome or run.lora_path])
            item.setData(0, Qt.UserRole, run.id)
            item.setToolTip(2, "\n".join(t for t in (run.outcome, run.lora_path) if t))
            self.list.addTopLevelItem(item)
            item.setSelected(run.id in selected)
        self._update_buttons()

    def rows(self) -> list[tuple[str, str, str]]:
        """(label, status, outcome) of each entry, as listed."""
        return [tuple(self.list.topLevelItem(i).text(c) for c in range(len(COLUMNS)))
                for i in range(self.list.topLevelItemCount())]

    def _update_buttons(self) -> None:
        running = self.model.running
        self.run_button.setText("Stop queue" if running else "Run queue")
        self.run_button.setToolTip("Start no further run (the current one goes on to its end)."
                                   if running else "Train the waiting runs one after another.")
        self.run_button.setEnabled(running or self.model.can_run)
        self.remove_button.setEnabled(bool(self.list.selectedItems()))
