"""Guards the PySide6 pin: 6.12.0 leaked a reference to None on every void Qt call, which
aborts CPython < 3.12 ("none_dealloc") after a few thousand calls in a running window."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QLabel


def test_void_qt_calls_do_not_leak_none(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(2000):
        label.setText("x")
    assert abs(sys.getrefcount(None) - before) < 50
