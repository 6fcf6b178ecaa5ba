"""An honest placeholder for a tab whose engine is still being built."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget


class ComingSoonPanel(QWidget):
    """A centred card: the tab's title, what it will do, and what to use meanwhile."""

    def __init__(self, title: str, description: str, meanwhile: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        card = QFrame()
        card.setObjectName("ComingSoonCard")
        card.setFixedWidth(540)  # a fixed width lets the wrapped labels take their height
        heading = QLabel(title)
        heading.setObjectName("ComingSoonTitle")
        heading.setAlignment(Qt.AlignCenter)
        badge = QLabel("Coming in the next version")
        badge.setObjectName("ComingSoonBadge")
        badge.setAlignment(Qt.AlignCenter)
        body = QLabel(description)
        body.setObjectName("ComingSoonBody")
        body.setWordWrap(True)
        body.setAlignment(Qt.AlignCenter)
        card_layout = QVBoxLayout(card)
        card_layout.setContentsMargins(32, 28, 32, 28)
        card_layout.setSpacing(12)
        card_layout.addWidget(heading)
        card_layout.addWidget(badge, 0, Qt.AlignHCenter)
        card_layout.addWidget(body)
        if meanwhile:
            hint = QLabel(meanwhile)
            hint.setObjectName("HintLabel")
            hint.setWordWrap(True)
            hint.setAlignment(Qt.AlignCenter)
            hint.setTextInteractionFlags(Qt.TextSelectableByMouse)
            card_layout.addWidget(hint)
        # Centred by stretches, not an alignment flag: an aligned widget gets its size hint's
        # height, which clips wrapped labels; a stretched one gets its height-for-width.
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(2)
