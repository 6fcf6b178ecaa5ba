"""The base-model picker at the top right of the window: one choice for every tab.

An editable list (the built-in tiny model, models in the local Hugging Face cache, recently used
folders and files; or type a path / repo id), "Folder…" for a diffusers folder, "File…" for a
single-file checkpoint, and the architecture found (SD 1.x / 2.x / SDXL) or what is wrong.
It only binds to a `BaseModelChoice`.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from lora_studio.ui.base_model import TINY_MODEL_LABEL, BaseModelChoice, normal_spec

CHECKPOINT_FILTER = "Checkpoints (*.safetensors *.ckpt *.pt *.pth *.bin);;All files (*)"


class BaseModelPicker(QWidget):
    def __init__(self, choice: BaseModelChoice, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("BaseModelPicker")
        self.choice = choice
        caption = QLabel("Base model")
        caption.setObjectName("HintLabel")
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.NoInsert)
        self.combo.setMinimumWidth(200)
        self.combo.setToolTip(
            "The Stable Diffusion model every tab uses: the built-in tiny model (a toy for "
            "learning the workflow), a diffusers folder, a single-file .safetensors checkpoint, "
            "or a hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5 already in your "
            "local Hugging Face cache (nothing is downloaded).")
        self.folder_button = QPushButton("Folder…")
        self.folder_button.setToolTip("Choose a diffusers model folder (with model_index.json)")
        self.file_button = QPushButton("File…")
        self.file_button.setToolTip("Choose a single-file checkpoint (.safetensors)")
        self.arch_label = QLabel("")
        self.arch_label.setObjectName("ArchLabel")
        self.arch_label.setMinimumWidth(70)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 2, 8, 2)
        row.setSpacing(6)
        row.addWidget(caption)
        row.addWidget(self.combo, 1)
        row.addWidget(self.folder_button)
        row.addWidget(self.file_button)
        row.addWidget(self.arch_label)

        self.refresh_items()
        self.combo.activated.connect(self._on_activated)
        self.combo.lineEdit().editingFinished.connect(self._on_edited)
        self.folder_button.clicked.connect(self._pick_folder)
        self.file_button.clicked.connect(self._pick_file)
        choice.changed.connect(lambda _spec: self._show_current())
        choice.described.connect(self._show_description)
        self._show_current()
        if choice.description:
            self._show_description(choice.description, choice.ok)

    def refresh_items(self) -> None:
        """The list: tiny model, cached hub models, recent folders / files."""
        from lora_studio.core.models.hub_cache import list_cached_models

        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItem(TINY_MODEL_LABEL, "")
        try:
            cached = list_cached_models()
        except OSError:
            cached = []
        for repo_id in cached:
            self.combo.addItem(f"{repo_id}  (hub cache)", repo_id)
        for spec in self.choice.recent():
            if spec not in cached:
                self.combo.addItem(spec, spec)
        self.combo.blockSignals(False)
        self._show_current()

    def choose(self, spec: str | Path | None) -> None:
        """Select `spec` as the base model (what the buttons and the list do)."""
        self.choice.set_spec(None if spec is None else str(spec))
        self.refresh_items()

    # ------------------------------------------------------------------ internals
    def _show_current(self) -> None:
        spec = self.choice.spec
        text = TINY_MODEL_LABEL if spec is None else spec
        if self.combo.currentText() != text:
            index = self.combo.findData(spec or "")
            if index >= 0:
                self.combo.setCurrentIndex(index)
            self.combo.setEditText(text)
        if self.choice.description:
            self._show_description(self.choice.description, self.choice.ok)
        else:
            self.arch_label.setText("…")
            self.arch_label.setToolTip("Reading the model's configuration…")
            self.arch_label.setStyleSheet("")

    def _show_description(self, text: str, ok: bool) -> None:
        if ok:
            self.arch_label.setText(text)
            self.arch_label.setToolTip(f"Architecture: {text}" + (
                "\n\nTiny Shapes is a toy model: simple colored shapes on plain backgrounds, "
                "64x64, for learning the workflow on any CPU." if self.choice.spec is None
                else ""))
            self.arch_label.setStyleSheet("")
        else:
            self.arch_label.setText("⚠ cannot use")
            self.arch_label.setToolTip(text)
            self.arch_label.setStyleSheet("color: #ff8a80;")

    def _on_activated(self, index: int) -> None:
        self.choose(self.combo.itemData(index) or None)

    def _on_edited(self) -> None:
        text = self.combo.currentText().strip()
        if text == TINY_MODEL_LABEL or text.endswith("(hub cache)"):
            index = self.combo.findText(text)
            text = self.combo.itemData(index) if index >= 0 else ""
        if normal_spec(text) != self.choice.spec:
            self.choose(text or None)

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder")
        if folder:
            self.choose(folder)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a base model checkpoint", "",
                                              CHECKPOINT_FILTER)
        if path:
            self.choose(path)
