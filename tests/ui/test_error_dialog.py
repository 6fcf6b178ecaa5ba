"""The error box: the message up front, the traceback behind "Details"."""

from __future__ import annotations

from PySide6.QtCore import Qt

from lora_studio.core import events as ev
from lora_studio.ui.widgets.error_dialog import ErrorDialog


def test_details_are_hidden_until_asked_for(qtbot):
    failed = ev.Failed(message="The base model could not be loaded.\nChoose another file.",
                       details="Traceback (most recent call last):\n  File 'x.py'\nOSError: boom")
    dialog = ErrorDialog.from_event(failed)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.message_label.text().startswith("The base model could not be loaded.")
    assert not dialog.details_visible
    qtbot.mouseClick(dialog.details_button, Qt.LeftButton)
    assert dialog.details_visible
    assert "OSError: boom" in dialog.details_view.toPlainText()


def test_no_details_button_without_details(qtbot):
    dialog = ErrorDialog("Something small went wrong.")
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.details_button.isVisible()
