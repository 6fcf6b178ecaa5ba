"""The right-hand side of the Dataset tab: the trigger word / default caption, the caption
editor with "What the model sees" and the "Doctor" (with the tag tools) on tabs beside it, and
the report of what training will do (the two halves split, so either can be given more room)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGroupBox, QLineEdit, QSplitter, QTabWidget, QVBoxLayout, QWidget

from lora_studio.ui.widgets.caption_editor import CaptionEditor
from lora_studio.ui.widgets.dataset_doctor import DoctorPanel
from lora_studio.ui.widgets.model_sees import ModelSeesPanel
from lora_studio.ui.widgets.report_panel import ReportPanel


class DatasetSidePanel(QSplitter):
    """Holds `trigger_edit`, `caption_tabs` (`editor`, `model_sees`, `doctor` with the tag
    tools) and `report_panel`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Vertical, parent)
        self.trigger_edit = QLineEdit()
        self.trigger_edit.setObjectName("TriggerEdit")
        self.trigger_edit.setPlaceholderText("e.g. zqstar")
        self.trigger_edit.setToolTip("The caption of images that have no caption file (unless "
                                     "their folder has its own), and stored in the LoRA as its "
                                     "trigger word.")
        trigger_box = QGroupBox("Trigger word / default caption")
        QVBoxLayout(trigger_box).addWidget(self.trigger_edit)

        self.editor = CaptionEditor()
        self.model_sees = ModelSeesPanel()
        self.caption_tabs = QTabWidget()
        self.caption_tabs.setObjectName("CaptionTabs")
        self.caption_tabs.addTab(self.editor, "Caption")
        self.caption_tabs.addTab(self.model_sees, "What the model sees")
        self.doctor = DoctorPanel()
        self.caption_tabs.addTab(self.doctor, "Doctor")

        self.report_panel = ReportPanel()
        report_box = QGroupBox("What training will do")
        QVBoxLayout(report_box).addWidget(self.report_panel)

        upper = QWidget()
        upper_layout = QVBoxLayout(upper)
        upper_layout.setContentsMargins(0, 0, 0, 0)
        upper_layout.setSpacing(10)
        upper_layout.addWidget(trigger_box)
        upper_layout.addWidget(self.caption_tabs, 1)
        self.setChildrenCollapsible(False)
        self.addWidget(upper)
        self.addWidget(report_box)
        self.setStretchFactor(0, 1)
        self.setStretchFactor(1, 1)
        self.setSizes([450, 330])
        self.setMinimumWidth(340)

    def showing_model_sees(self) -> bool:
        return self.caption_tabs.currentWidget() is self.model_sees
