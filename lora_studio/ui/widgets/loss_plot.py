"""The training loss curve: raw loss per step (faint) and its moving average (bold)."""

from __future__ import annotations

from collections import deque

import pyqtgraph as pg
from PySide6.QtWidgets import QWidget


class LossPlot(pg.PlotWidget):
    """`add(step, loss)` appends a point; `clear_points()` starts a new run."""

    def __init__(self, parent: QWidget | None = None, smoothing: int = 20) -> None:
        super().__init__(parent, background=None)
        self.setObjectName("LossPlot")
        self.setMinimumHeight(160)
        item = self.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.15)
        item.setLabel("bottom", "step")
        item.setLabel("left", "loss")
        item.setMenuEnabled(False)
        item.hideButtons()
        item.getAxis("left").enableAutoSIPrefix(False)
        self._raw = item.plot(pen=pg.mkPen((120, 160, 220, 90), width=1))
        self._smooth = item.plot(pen=pg.mkPen((90, 170, 255), width=2))
        self._window = deque(maxlen=smoothing)
        self.steps: list[float] = []
        self.losses: list[float] = []
        self._averages: list[float] = []

    def add(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self._window.append(loss)
        self._averages.append(sum(self._window) / len(self._window))
        self._raw.setData(self.steps, self.losses)
        self._smooth.setData(self.steps, self._averages)

    def clear_points(self) -> None:
        self.steps.clear()
        self.losses.clear()
        self._averages.clear()
        self._window.clear()
        self._raw.setData([], [])
        self._smooth.setData([], [])
