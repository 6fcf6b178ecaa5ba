"""The window's status bar: messages on the left; device, base model and job on the right."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from lora_studio.core import events as ev


class StudioStatusBar(QStatusBar):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("StudioStatusBar")
        self.device_label = _label("DeviceLabel", "Device: checking…",
                                   "The device training and generation run on")
        self.model_label = _label("ModelLabel", "Model: Tiny Shapes (built-in)",
                                  "The base model training starts from")
        self.job_label = _label("JobLabel", "Idle", "The job running in the background")
        for label in (self.device_label, self.model_label, self.job_label):
            self.addPermanentWidget(label)

    def set_device(self, text: str) -> None:
        self.device_label.setText(f"Device: {text}")

    def set_base_model(self, text: str) -> None:
        self.model_label.setText(f"Model: {text}")

    def set_job(self, text: str) -> None:
        self.job_label.setText(text)

    def show_job_event(self, name: str, event: ev.Event) -> None:
        """Keep the job label current from a job's events."""
        if isinstance(event, (ev.StepProgress, ev.GenerationStep)):
            self.set_job(f"{name.capitalize()}: step {event.step}/{event.total_steps}")
        elif isinstance(event, ev.JobStarted):
            self.set_job(f"{name.capitalize()}: starting")
        elif isinstance(event, ev.Finished):
            self.set_job(f"Idle · {name} finished")
        elif isinstance(event, ev.Cancelled):
            self.set_job(f"Idle · {name} cancelled")
        elif isinstance(event, ev.Failed):
            self.set_job(f"Idle · {name} failed")


def _label(name: str, text: str, tip: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    label.setToolTip(tip)
    return label
