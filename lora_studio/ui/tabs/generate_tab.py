"""Generate tab: prompt → images with the LoRA stack, A1111-style.

Left: the settings (`GenerateForm`), the active LoRA stack (read-only here; the Mix tab edits it),
the output folder, Generate / Cancel. Right: a large view that shows each denoising step's
preview while a render runs and the clicked result afterwards, the result gallery, the selected
image's parameters, "Save as…" and "Open folder".

Renders run through the window's `SessionModel` (one job at a time on the shared JobRunner); the
tab reads only the events it relays and steers the render only through `SessionModel.cancel`.
Every image is saved by the engine as `<output>/<NNNNN>-<seed>.png` with A1111's `parameters`
chunk. Dropping a PNG made by A1111 or by the studio on the tab fills the fields from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core import events as ev
from lora_studio.core.errors import StudioError
from lora_studio.core.fileio import atomic_write_with
from lora_studio.core.paths import user_data_dir
from lora_studio.ui.session_model import SessionModel
from lora_studio.ui.widgets.drop_zone import PathDropMixin, local_paths
from lora_studio.ui.widgets.error_dialog import show_error
from lora_studio.ui.widgets.gallery import Gallery, GalleryEntry, ImageView
from lora_studio.ui.widgets.generate_form import GenerateForm
from lora_studio.ui.widgets.preview_strip import to_pixmap

KEY_OUTPUT = "generate/output_dir"
KEY_LAST = "generate/last_settings"  # the form as of the last Generate (JSON)
PARAMETER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIEW_HINT = ("Write a prompt and press Generate (Ctrl+Enter).\nEach step's preview appears "
             "here, then the image.\n\nDrop a PNG made by AUTOMATIC1111 or LoRA Studio here "
             "to reuse its settings.")


def default_output_dir() -> Path:
    return user_data_dir() / "outputs"


def parameter_image_in(paths: list[Path]) -> Path | None:
    """The first dropped image file that could carry generation parameters (no folders)."""
    if not paths or any(p.is_dir() for p in paths):
        return None
    return next((p for p in paths if p.is_file()
                 and p.suffix.lower() in PARAMETER_IMAGE_SUFFIXES), None)


class GenerateTab(PathDropMixin, QWidget):
    def __init__(self, model: SessionModel, settings: QSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("GenerateTab")
        self.setAcceptDrops(True)
        self.model = model
        self._settings = settings
        self.last_terminal: ev.Event | None = None
        self._cancelling = False
        self._build()
        model.stack_changed.connect(self._show_stack)
        model.base_model_changed.connect(lambda _spec: self.form.set_model_size(None, None))
        model.generation_event.connect(self._on_event)
        model.generation_finished.connect(self._on_finished)
        model.runner.started.connect(lambda _name: self._update_buttons())
        model.runner.finished.connect(lambda _t: self._update_buttons())
        if settings is not None:
            self.output_edit.setText(str(settings.value(KEY_OUTPUT, "") or ""))
            self._restore_form(settings)
        self._show_stack()
        self._update_buttons()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.form = GenerateForm()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("PrimaryButton")
        self.generate_button.setToolTip("Render with these settings (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step; finished images are kept")
        self.cancel_button.clicked.connect(self.cancel)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, activated=self.generate)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.cancel_button, 1)

        self.stack_label = QLabel()
        self.stack_label.setWordWrap(True)
        self.stack_label.setTextFormat(Qt.RichText)
        stack_box = QGroupBox("LoRAs (set on the Mix tab)")
        QVBoxLayout(stack_box).addWidget(self.stack_label)

        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText(str(default_output_dir()))
        self.output_edit.setToolTip("Where every image is saved, as PNG with its parameters. "
                                    "Empty: the default folder.")
        self.output_edit.editingFinished.connect(self._remember_output)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_output)
        output_box = QGroupBox("Output folder")
        out_row = QHBoxLayout(output_box)
        out_row.addWidget(self.output_edit, 1)
        out_row.addWidget(browse)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 6, 0)
        left_layout.addWidget(self.form)
        left_layout.addLayout(buttons)
        left_layout.addWidget(stack_box)
        left_layout.addWidget(output_box)
        left_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(left)
        scroll.setMinimumWidth(380)

        self.view = ImageView(VIEW_HINT)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.status_label = QLabel("Ready.")
        self.status_label.setObjectName("HintLabel")
        self.status_label.setWordWrap(True)
        self.gallery = Gallery()
        self.gallery.image_selected.connect(self._show_entry)
        self.info_view = QPlainTextEdit()
        self.info_view.setReadOnly(True)
        self.info_view.setPlaceholderText("The selected image's parameters (A1111 PNG Info).")
        self.info_view.setFixedHeight(self.info_view.fontMetrics().lineSpacing() * 4 + 26)
        self.save_as_button = QPushButton("Save as…")
        self.save_as_button.setToolTip("Save a copy of the selected image (with its parameters)")
        self.save_as_button.clicked.connect(self._save_as_dialog)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.setToolTip("Open the output folder in the file manager")
        self.open_folder_button.clicked.connect(self.open_output_folder)
        actions = QHBoxLayout()
        actions.addWidget(self.status_label, 1)
        actions.addWidget(self.save_as_button)
        actions.addWidget(self.open_folder_button)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 0, 0, 0)
        right_layout.addWidget(self.view, 1)
        right_layout.addWidget(self.progress)
        right_layout.addLayout(actions)
        right_layout.addWidget(self.gallery)
        right_layout.addWidget(self.info_view)

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([420, 760])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(splitter)
        for edit in (self.form.prompt_edit, self.form.negative_edit):
            edit.viewport().installEventFilter(self)  # a PNG dropped on a prompt box: its settings

    # ------------------------------------------------------------------ actions
    def output_dir(self) -> Path:
        text = self.output_edit.text().strip()
        return Path(text).expanduser() if text else default_output_dir()

    def set_output_dir(self, path: str | Path | None) -> None:
        self.output_edit.setText(str(path) if path else "")
        self._remember_output()

    def generate(self) -> bool:
        """Start a render with the form's settings; False when it cannot start (why is shown)."""
        try:
            request = self.form.to_request(self.output_dir())
        except StudioError as exc:
            show_error(self, exc.user_message(), title="Cannot generate")
            return False
        if self.model.runner.is_running:
            return self.model.generate(request)  # refused: the runner's message says why
        self.last_terminal = None
        self._cancelling = False
        self.progress.setRange(0, request.steps * request.count)
        self.progress.setValue(0)
        first = self.model.session is None
        if not self.model.generate(request):
            return False
        if self._settings is not None:
            self._settings.setValue(KEY_LAST, json.dumps(self.form.settings_dict()))
        self.gallery.begin_run()
        self._set_status("Loading the model…" if first else "Starting…")
        self.form.set_editable(False)
        self._update_buttons()
        return True

    def cancel(self) -> None:
        if self.model.is_generating:
            self._cancelling = True
            self.model.cancel()
            self._set_status("Cancelling: stopping after the current step…")
            self._update_buttons()

    def save_selected_as(self, target: str | Path) -> Path:
        """Copy the selected image (PNG with its parameters) to `target`."""
        entry = self.gallery.current_entry()
        if entry is None:
            raise StudioError("No image is selected.", "Click an image in the gallery first.")
        target = Path(target)
        if target.suffix.lower() != ".png":
            target = target.with_suffix(".png")
        if entry.path is not None and entry.path.is_file():
            atomic_write_with(target, lambda tmp: shutil.copyfile(entry.path, tmp))
        else:
            entry.pixmap.save(str(target), "PNG")
        return target

    def open_output_folder(self) -> None:
        folder = self.output_dir()
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def load_parameters_from(self, path: str | Path) -> bool:
        """Fill the fields from an image's A1111 parameters; False (and a message) without."""
        from lora_studio.core.generate.pnginfo import parse_parameters, read_png_parameters

        path = Path(path)
        try:
            text = read_png_parameters(path)
        except (OSError, ValueError) as exc:
            self._set_status(f"Cannot read {path.name}: {exc}")
            return False
        if not text:
            self._set_status(f"{path.name} holds no generation parameters (PNG Info). To train "
                             "on images, drop their folder on the Dataset tab.")
            return False
        params = parse_parameters(text)
        notes = self.form.apply_parameters(params)
        notes += self._missing_lora_notes(params.get("loras") or [])
        self._set_status(" ".join([f"Settings loaded from {path.name}."] + notes))
        return True

    # ------------------------------------------------------------------ events
    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.JobStarted):
            self._set_status(f"Generating ({event.message})…")
        elif isinstance(event, ev.Log):
            self._set_status(event.message)
        elif isinstance(event, ev.GenerationStep):
            self._on_step(event)
        elif isinstance(event, ev.ImageGenerated):
            entry = GalleryEntry(to_pixmap(event.image), event.path, event.seed, event.parameters)
            if not self.form.width_spin.value() and not self.form.height_spin.value():
                self.form.set_model_size(*event.image.size)  # "Auto" = this model's size
            self.gallery.add(entry)  # selects it: the view shows it
        elif isinstance(event, (ev.Finished, ev.Cancelled, ev.Failed)):
            self.last_terminal = event
            self._set_status(self._end_text(event))
            if isinstance(event, ev.Failed):
                show_error(self, event.message, event.details, title="Generation failed")

    def _on_step(self, event: ev.GenerationStep) -> None:
        steps = max(1, event.total_steps)
        self.progress.setValue(min(self.progress.maximum(), event.image_index * steps + event.step))
        count = max(1, self.progress.maximum() // steps)
        image = f"Image {event.image_index + 1}/{count} · " if count > 1 else ""
        if not self._cancelling:
            self._set_status(f"{image}step {event.step}/{steps}")
        if event.image is not None:
            self.view.set_pixmap(to_pixmap(event.image))

    def _on_finished(self, _terminal: ev.Event) -> None:
        self._cancelling = False
        self.form.set_editable(True)
        entry = self.gallery.current_entry()
        if entry is not None:
            self.view.set_pixmap(entry.pixmap)
        self._update_buttons()

    def _end_text(self, event: ev.Event) -> str:
        if isinstance(event, ev.Finished):
            folder = self.output_dir()
            return f"Done: {event.message}. Saved in {folder}."
        if isinstance(event, ev.Cancelled):
            return event.message or "Cancelled."
        return "Failed (see the message)."

    def _show_entry(self, entry: GalleryEntry) -> None:
        self.view.set_pixmap(entry.pixmap)
        self.info_view.setPlainText(entry.parameters)
        self.form.set_last_seed(entry.seed)
        self._update_buttons()

    # ------------------------------------------------------------------ helpers
    def _show_stack(self) -> None:
        stack = self.model.stack
        if not stack:
            self.stack_label.setText("<span style='color:#9aa0a6'>None: the base model alone. "
                                     "Stack LoRAs on the Mix tab.</span>")
            return
        rows = []
        for entry in stack:
            style = "" if entry.enabled else " style='color:#6b7075'"
            state = "" if entry.enabled else " (off)"
            rows.append(f"<tr{style}><td>{_html(entry.name)}</td><td align='right'>"
                        f"&nbsp;&nbsp;{entry.weight:.2f}{state}</td></tr>")
        self.stack_label.setText(f"<table width='100%'>{''.join(rows)}</table>")

    def _missing_lora_notes(self, loras: list[dict]) -> list[str]:
        names = {e.path.stem.lower() for e in self.model.stack} | {
            e.name.lower() for e in self.model.stack}
        missing = [lo["name"] for lo in loras if lo["name"].lower() not in names]
        if not missing:
            return []
        return [f"It used LoRA {', '.join(missing)}, not in your stack (add it on the Mix tab)."]

    def _update_buttons(self) -> None:
        running = self.model.runner.is_running
        ours = self.model.is_generating
        self.generate_button.setEnabled(not running)
        self.cancel_button.setEnabled(ours and not self._cancelling)
        has_image = self.gallery.current_entry() is not None
        self.save_as_button.setEnabled(has_image)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _restore_form(self, settings: QSettings) -> None:
        try:
            saved = json.loads(str(settings.value(KEY_LAST, "") or "{}"))
        except ValueError:
            return  # unreadable: the defaults
        if isinstance(saved, dict):
            self.form.apply_parameters(saved)

    def _remember_output(self) -> None:
        if self._settings is not None:
            self._settings.setValue(KEY_OUTPUT, self.output_edit.text().strip())

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", str(self.output_dir()))
        if folder:
            self.set_output_dir(folder)

    def _save_as_dialog(self) -> None:
        entry = self.gallery.current_entry()
        if entry is None:
            return
        name = entry.path.name if entry.path else f"{entry.seed}.png"
        target, _ = QFileDialog.getSaveFileName(self, "Save image as", str(Path.home() / name),
                                                "PNG image (*.png)")
        if target:
            try:
                self._set_status(f"Saved {self.save_selected_as(target)}")
            except (StudioError, OSError) as exc:
                message = exc.user_message() if isinstance(exc, StudioError) else str(exc)
                show_error(self, message, title="Cannot save")

    # ------------------------------------------------------------------ drag and drop
    def accepts_drop(self, paths: list[Path]) -> bool:
        return parameter_image_in(paths) is not None

    def drop_paths(self, paths: list[Path]) -> bool:
        image = parameter_image_in(paths)
        return image is not None and self.load_parameters_from(image)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's API
        if event.type() in (QEvent.DragEnter, QEvent.DragMove, QEvent.Drop):
            if self.accepts_drop(local_paths(event.mimeData())):
                if event.type() == QEvent.Drop:
                    self.drop_paths(local_paths(event.mimeData()))
                event.acceptProposedAction()
                return True
        return super().eventFilter(watched, event)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
