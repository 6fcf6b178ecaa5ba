"""An error box: what happened and what to do, with the traceback behind a "Details" expander."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core import events as ev


class ErrorDialog(QDialog):
    """Shows `message` (the StudioError text a person can act on); `details` (a traceback) stay
    hidden until "Details" is clicked, with a button to copy them for a bug report."""

    def __init__(self, message: str, details: str = "", title: str = "Something went wrong",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ErrorDialog")
        self.setWindowTitle(title)
        self.setMinimumWidth(480)

        icon = QLabel()
        icon.setPixmap(self.style().standardIcon(QStyle.SP_MessageBoxCritical).pixmap(40, 40))
        icon.setFixedSize(48, 48)
        self.message_label = QLabel(message)
        self.message_label.setObjectName("ErrorMessage")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(icon, 0)
        top.addWidget(self.message_label, 1)

        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setArrowType(_arrow(False))
        self.details_button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.details_button.toggled.connect(self._toggle_details)
        self.details_button.setVisible(bool(details))

        self.details_view = QPlainTextEdit(details)
        self.details_view.setReadOnly(True)
        self.details_view.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.details_view.setMinimumHeight(180)
        self.details_view.setVisible(False)

        buttons = QDialogButtonBox(QDialogButtonBox.Ok)
        self.copy_button = QPushButton("Copy details")
        self.copy_button.setVisible(bool(details))
        self.copy_button.clicked.connect(self._copy)
        buttons.addButton(self.copy_button, QDialogButtonBox.ActionRole)
        buttons.accepted.connect(self.accept)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.details_button)
        layout.addWidget(self.details_view, 1)
        layout.addWidget(buttons)

    @classmethod
    def from_event(cls, event: ev.Failed, parent: QWidget | None = None) -> ErrorDialog:
        return cls(event.message, event.details, parent=parent)

    @property
    def details_visible(self) -> bool:
        return self.details_view.isVisible()

    def _toggle_details(self, shown: bool) -> None:
        self.details_view.setVisible(shown)
        self.details_button.setArrowType(_arrow(shown))
        self.adjustSize()

    def _copy(self) -> None:
        QApplication.clipboard().setText(f"{self.message_label.text()}\n\n"
                                         f"{self.details_view.toPlainText()}")


def _arrow(expanded: bool) -> Qt.ArrowType:
    return Qt.DownArrow if expanded else Qt.RightArrow


def show_error(parent: QWidget | None, message: str, details: str = "",
               title: str = "Something went wrong") -> ErrorDialog:
    """Open a non-blocking error dialog (it deletes itself when closed) and return it."""
    dialog = ErrorDialog(message, details, title=title, parent=parent)
    dialog.setAttribute(Qt.WA_DeleteOnClose, True)
    dialog.open()
    return dialog

