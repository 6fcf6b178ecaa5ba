"""The training loss curve: raw loss per step (faint), its moving average (bold) and the
validation loss (amber points and line, `add_validation`) with its best step marked by a vertical
line labelled "best: step N".

Points arrive as fast as training makes them (hundreds per second on a GPU with a small model);
`add` only appends to buffers, and a single-shot QTimer redraws at most every `redraw_ms`
(100 ms → ~10 redraws per second), so drawing never slows training down.
"""

from __future__ import annotations

from collections import deque

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QWidget

REDRAW_MS = 100
VALIDATION_COLOR = (240, 170, 60)


class LossPlot(pg.PlotWidget):
    """`add(step, loss)` buffers a point; `flush()` draws now; `clear_points()` starts a new run.

    `steps` / `losses` / `averages` hold every point received; `curve_data()` /
    `smoothed_data()` return what the curves currently draw (they catch up at the next redraw).
    `add_validation(step, loss)` buffers a validation point the same way: `validation` holds
    them, `validation_data()` is what is drawn, `best_validation()` the lowest and
    `best_marker()` where the "best: step N" line is drawn (None before any).
    """

    def __init__(self, parent: QWidget | None = None, smoothing: int = 20,
                 redraw_ms: int = REDRAW_MS) -> None:
        super().__init__(parent, background=None)
        self.setObjectName("LossPlot")
        self.setMinimumHeight(76)  # the Run panel (with its status line) fits 800x600
        item = self.getPlotItem()
        item.setLabel("bottom", "step")
        item.setLabel("left", "loss")
        item.setMenuEnabled(False)
        item.hideButtons()
        item.getAxis("left").enableAutoSIPrefix(False)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        legend = item.addLegend(offset=(-8, 8), labelTextSize="8pt")
        self._raw = item.plot(pen=pg.mkPen((120, 160, 220, 110), width=1), name="loss")
        self._smooth = item.plot(pen=pg.mkPen((90, 170, 255), width=2),
                                 name=f"average of {smoothing}")
        self._val = item.plot(pen=pg.mkPen(VALIDATION_COLOR, width=2), symbol="o",
                              symbolSize=6, symbolBrush=VALIDATION_COLOR, symbolPen=None,
                              name="validation")
        self._best = pg.InfiniteLine(angle=90, movable=False,
                                     pen=pg.mkPen(VALIDATION_COLOR, width=1, style=Qt.DashLine),
                                     label="", labelOpts={"position": 0.92,
                                                          "color": VALIDATION_COLOR})
        self._best.setVisible(False)
        item.addItem(self._best, ignoreBounds=True)
        legend.setVisible(True)
        self.validation: list[tuple[int, float]] = []
        self._window: deque[float] = deque(maxlen=smoothing)
        self._window_sum = 0.0
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.averages: list[float] = []
        self.redraws = 0  # how many times the curves were redrawn (the throttle's effect)
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(redraw_ms)
        self._timer.timeout.connect(self.flush)

    def add(self, step: int, loss: float) -> None:
        """Buffer one point; the curves redraw within `redraw_ms`."""
        if len(self._window) == self._window.maxlen:
            self._window_sum -= self._window[0]
        self._window.append(loss)
        self._window_sum += loss
        self.steps.append(step)
        self.losses.append(loss)
        self.averages.append(self._window_sum / len(self._window))
        self._schedule()

    def add_validation(self, step: int, loss: float) -> None:
        """Buffer one validation point; it is drawn (and the best step marked) at the next
        redraw."""
        self.validation.append((step, loss))
        self._schedule()

    def best_validation(self) -> tuple[int, float] | None:
        """The (step, loss) with the lowest validation loss so far (the earliest on a tie)."""
        return min(self.validation, key=lambda p: p[1]) if self.validation else None

    def _schedule(self) -> None:
        self._dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Draw the buffered points now (the timer calls this; so does the end of a run)."""
        self._timer.stop()
        if not self._dirty:
            return
        self._dirty = False
        self._raw.setData(self.steps, self.losses)
        self._smooth.setData(self.steps, self.averages)
        self._val.setData([p[0] for p in self.validation], [p[1] for p in self.validation])
        best = self.best_validation()
        if best is not None:
            text = f"best: step {best[0]}"
            self._best.setValue(best[0])
            self._best.label.setFormat(text)  # its own updates skip a hidden label: set it too
            self._best.label.setText(text)
        self._best.setVisible(best is not None)
        self.redraws += 1

    def curve_data(self) -> tuple[list[float], list[float]]:
        """The raw curve's points as drawn now."""
        return _xy(self._raw)

    def smoothed_data(self) -> tuple[list[float], list[float]]:
        """The moving-average curve's points as drawn now."""
        return _xy(self._smooth)

    def validation_data(self) -> tuple[list[float], list[float]]:
        """The validation curve's points as drawn now."""
        return _xy(self._val)

    def best_marker(self) -> tuple[int, str] | None:
        """The step the "best" line marks and its label, as drawn now (None: not shown)."""
        if not self._best.isVisible():
            return None
        return int(self._best.value()), self._best.label.toPlainText()

    def clear_points(self) -> None:
        self._timer.stop()
        self._dirty = False
        self.steps.clear()
        self.losses.clear()
        self.averages.clear()
        self._window.clear()
        self._window_sum = 0.0
        self.validation.clear()
        for curve in (self._raw, self._smooth, self._val):
            curve.setData([], [])
        self._best.setVisible(False)


def _xy(curve: pg.PlotDataItem) -> tuple[list[float], list[float]]:
    xs, ys = curve.getOriginalDataset()
    if xs is None or ys is None:
        return [], []
    return [float(x) for x in xs], [float(y) for y in ys]
