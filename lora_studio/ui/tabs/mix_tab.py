"""Mix tab: the LoRA library, the stack on strength sliders, a live preview, and exports.

Left: the library (`LoraLibrary`: files trained here, files and folders added or dropped, each
with its architecture, rank, alpha and trigger words; files that cannot be used say why).
Middle: the stack, one `LoraStackRow` per LoRA (on/off, strength -2..2 in 0.05 steps, remove,
per-block strengths under "Blocks ▸", and the share of the steps it starts at), bound to the
window's `SessionModel` — the Generate tab renders with the same stack — plus "Copy prompt
tags" (`<lora:name:weight>` for A1111 / ComfyUI, with `:lbw=...` when a LoRA has block
weights, each followed by its A1111 card's activation text, as A1111 inserts it) and "Save
merged LoRA" (`core.lora.merge` at the strengths and block weights of the stack: exact for plain
LoRAs; the modules a LyCORIS file touches re-ranked by SVD to `LYCORIS_DEFAULT_RANK`, the kept
share in the status line; DoRA updates made on the base model's weights). Right, two tabs:
the live preview (`LivePreview`: debounced, stale renders dropped) of a fixed seed, and the Grid
(`StrengthGridPanel`): one or two stacked LoRAs over lists of strengths, or every step a
training run saved (`show_run_grid(folder)`), cells shown as they finish, one labelled PNG.

The stack is remembered in QSettings as `[path, weight, enabled, block weights' 17 numbers or
null]`, plus the start as a fifth item when it is not 0. It is written `SAVE_DELAY_MS` after the
last change (a slider drag writes once, when it rests), and at once by `flush_settings()`, which
`shutdown()` (the window closing) calls.

Exports and merges run in a background thread (`TaskPool`) and write atomically; the result
(or the reason it failed) shows in the status line and arrives as `exported(Path)` /
`export_failed(str)`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from lora_studio.core.errors import StudioError, error_text
from lora_studio.core.generate.pnginfo import lora_tag
from lora_studio.core.lora.block_weights import BlockWeights
from lora_studio.ui.grid_model import GridModel
from lora_studio.ui.live_preview import LivePreview
from lora_studio.ui.lora_library import LORA_SUFFIX, LoraLibrary
from lora_studio.core.generate.stack import StackEntry
from lora_studio.ui.session_model import SessionModel
from lora_studio.ui.widgets.drop_zone import PathDropMixin
from lora_studio.ui.widgets.gallery import ImageView
from lora_studio.ui.widgets.lora_library_panel import LoraLibraryPanel
from lora_studio.ui.widgets.lora_stack_row import WEIGHT_MAX, WEIGHT_MIN, LoraStackRow
from lora_studio.ui.widgets.preview_strip import to_pixmap
from lora_studio.ui.widgets.strength_grid_panel import StrengthGridPanel
from lora_studio.ui.workers import TaskPool

KEY_STACK = "mix/stack"
KEY_PREVIEW_ON = "mix/live_preview"
KEY_PREVIEW_PROMPT = "mix/preview_prompt"
SAVE_DELAY_MS = 500  # the stack is saved this long after its last change
LAYOUT_FILTERS = {
    "kohya": "kohya layout — A1111, ComfyUI, Forge (*.safetensors)",
    "diffusers": "diffusers / PEFT layout (*.safetensors)",
}
STACK_HINT = "Nothing stacked. Select a LoRA in the library and press “Add to stack”."


def prompt_tags(stack: tuple[StackEntry, ...],
                activation_texts: Mapping[Path, str] | None = None) -> str:
    """A1111 / ComfyUI prompt tags for the switched-on LoRAs: `<lora:file stem:weight>`, with
    `:lbw=...` (A1111's LoRA Block Weight extension) for a LoRA with block weights, each
    followed by its activation text (`activation_texts`: path -> text, from the cards) as
    A1111 adds it when a card is clicked (`<lora:name:w> text`)."""
    texts = activation_texts or {}
    return " ".join(" ".join(part for part in (
        lora_tag(e.path.stem, e.weight, e.block_weights.notation() if e.block_weights else None),
        texts.get(e.path, "")) if part) for e in stack if e.enabled)


class MixTab(PathDropMixin, QWidget):
    exported = Signal(object)  # Path of a file written by an export or a merge
    export_failed = Signal(str)

    def __init__(self, model: SessionModel, library: LoraLibrary,
                 settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MixTab")
        self.setAcceptDrops(True)
        self.model = model
        self.library = library
        self._settings = settings
        self._pool = TaskPool(max_threads=1, parent=self)
        self._rows: dict[Path, LoraStackRow] = {}
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self._save_stack)
        self.preview = LivePreview(model, parent=self)
        self._build()
        model.stack_changed.connect(self._sync_rows)
        model.problems_changed.connect(self._show_problems)
        model.stack_changed.connect(self._update_preview_prompt)
        self.preview.image_ready.connect(lambda image: self.preview_view.set_pixmap(
            to_pixmap(image)))
        self.preview.status.connect(self.preview_status.setText)
        library.changed.connect(self._sync_rows)
        self._sync_rows()
        self._restore()
        # after the restore (it would clear it); debounced: not on every slider tick
        model.stack_changed.connect(self._save_timer.start)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.library_panel = LoraLibraryPanel(self.library)
        self.library_panel.add_requested.connect(self.add_to_stack)
        self.library_panel.add_files_button.clicked.connect(self._add_files_dialog)
        self.library_panel.add_folder_button.clicked.connect(self._add_folder_dialog)
        self.library_panel.rescan_button.clicked.connect(self.library.rescan)
        self.library_panel.export_button.clicked.connect(self._export_dialog)
        self.library_panel.remove_button.clicked.connect(self._remove_selected)
        library_box = QGroupBox("Library")
        QVBoxLayout(library_box).addWidget(self.library_panel)

        self.rows_holder = QWidget()
        self.rows_layout = QVBoxLayout(self.rows_holder)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.setSpacing(6)
        self.stack_hint = QLabel(STACK_HINT)
        self.stack_hint.setObjectName("HintLabel")
        self.stack_hint.setWordWrap(True)
        self.rows_layout.addWidget(self.stack_hint)
        self.rows_layout.addStretch(1)
        rows_scroll = QScrollArea()
        rows_scroll.setWidgetResizable(True)
        rows_scroll.setFrameShape(QScrollArea.NoFrame)
        rows_scroll.setWidget(self.rows_holder)
        self.copy_tags_button = QPushButton("Copy prompt tags")
        self.copy_tags_button.setToolTip("Copy <lora:name:weight> tags of the switched-on LoRAs "
                                         "for an AUTOMATIC1111 / ComfyUI / Forge prompt")
        self.copy_tags_button.clicked.connect(self.copy_prompt_tags)
        self.merge_button = QPushButton("Save merged LoRA…")
        self.merge_button.setToolTip("Save the switched-on LoRAs at their strengths as ONE "
                                     ".safetensors LoRA (exact: ranks concatenated)")
        self.merge_button.clicked.connect(self._merge_dialog)
        self.stack_status = QLabel("")
        self.stack_status.setObjectName("HintLabel")
        self.stack_status.setWordWrap(True)
        stack_buttons = QVBoxLayout()
        stack_buttons.addWidget(self.copy_tags_button)
        stack_buttons.addWidget(self.merge_button)
        stack_box = QGroupBox("Stack (used by Generate too)")
        stack_layout = QVBoxLayout(stack_box)
        stack_layout.addWidget(rows_scroll, 1)
        stack_layout.addLayout(stack_buttons)
        stack_layout.addWidget(self.stack_status)

        self.preview_check = QCheckBox("Live preview")
        self.preview_check.setToolTip("Re-render a small fixed-seed image when the stack changes")
        self.preview_check.toggled.connect(self._preview_toggled)
        self.preview_prompt = QLineEdit()
        self.preview_prompt.setPlaceholderText("Prompt (default: the stack's trigger words)")
        self.preview_prompt.editingFinished.connect(self._preview_prompt_edited)
        self.preview_view = ImageView("Switch on the live preview to see the stack at work.")
        self.preview_view.setMinimumSize(200, 200)
        self.preview_status = QLabel("")
        self.preview_status.setObjectName("HintLabel")
        self.preview_status.setWordWrap(True)
        preview_page = QWidget()
        preview_layout = QVBoxLayout(preview_page)
        preview_layout.addWidget(self.preview_check)
        preview_layout.addWidget(self.preview_prompt)
        preview_layout.addWidget(self.preview_view, 1)
        preview_layout.addWidget(self.preview_status)
        self.grid_model = GridModel(self.model, self.preview.make_way, parent=self)
        self.grid_panel = StrengthGridPanel(self.grid_model, lambda: self.preview.prompt)
        grid_page = QWidget()
        QVBoxLayout(grid_page).addWidget(self.grid_panel)
        self.side_tabs = QTabWidget()
        self.side_tabs.setDocumentMode(True)
        self.side_tabs.addTab(preview_page, "Preview")
        self.side_tabs.addTab(grid_page, "Grid")
        self.side_tabs.setTabToolTip(1, "Strength grids of stacked LoRAs, or every step a "
                                        "training run saved, side by side in one PNG")

        splitter = QSplitter(Qt.Horizontal)
        splitter.setChildrenCollapsible(False)
        for widget in (library_box, stack_box, self.side_tabs):
            splitter.addWidget(widget)
        splitter.setSizes([420, 430, 380])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(splitter)

    def show_run_grid(self, folder: str | Path, best_step: int | None = None) -> None:
        """Open the Grid over the saved steps of the training run in `folder` (saying which is
        nearest `best_step`, where the run's validation loss was lowest)."""
        self.side_tabs.setCurrentIndex(1)
        self.grid_panel.set_run_folder(folder, best_step)

    # ------------------------------------------------------------------ the stack
    def add_to_stack(self, path: str | Path, weight: float | None = None) -> bool:
        """Stack a library file (added to the library first when it is not there), at
        `weight`, else its A1111 card's preferred weight when the card sets one, else 1."""
        path = Path(path)
        if self.library.item(path) is None:
            self.library.add_files([path])
        item = self.library.item(path)
        if item is None or item.error is not None:
            self._say(f"{path.name} cannot be stacked: {item.error if item else 'not a LoRA'}")
            return False
        if weight is None:
            from lora_studio.core.lora.card import read_card

            found = read_card(path)  # read now: the card may have been edited in A1111
            preferred = found.card.weight if found.card is not None else None
            weight = 1.0 if preferred is None else max(WEIGHT_MIN, min(WEIGHT_MAX,
                                                                      round(preferred, 2)))
            if found.note:
                self._say(f"{found.note} {path.stem} is stacked at {weight:g}.")
        self.model.add_lora(path, weight)
        return True

    def row(self, path: str | Path) -> LoraStackRow | None:
        return self._rows.get(Path(path))

    def rows(self) -> list[LoraStackRow]:
        return [self._rows[e.path] for e in self.model.stack if e.path in self._rows]

    def copy_prompt_tags(self) -> str:
        texts = {e.path: item.activation_text for e in self.model.stack
                 if (item := self.library.item(e.path)) is not None}
        text = prompt_tags(self.model.stack, texts)
        QGuiApplication.clipboard().setText(text)
        self._say(f"Copied: {text}" if text else "Nothing to copy: no LoRA is switched on.")
        return text

    def _sync_rows(self) -> None:
        stack = self.model.stack
        wanted = {e.path for e in stack}
        for path in [p for p in self._rows if p not in wanted]:
            row = self._rows.pop(path)
            self.rows_layout.removeWidget(row)
            row.deleteLater()
        for row in self._rows.values():
            self.rows_layout.removeWidget(row)  # re-inserted below, in stack order
        for index, entry in enumerate(stack):
            row = self._rows.get(entry.path)
            if row is None:
                row = LoraStackRow(entry.path, entry.name, entry.weight, entry.enabled,
                                   block_weights=entry.block_weights, start=entry.start)
                row.weight_changed.connect(self.model.set_weight)
                row.enabled_changed.connect(self.model.set_enabled)
                row.block_weights_changed.connect(self.model.set_block_weights)
                row.start_changed.connect(self.model.set_start)
                row.remove_requested.connect(self.model.remove_lora)
                self._rows[entry.path] = row
            else:
                if (row.weight, row.enabled_box.isChecked()) != (entry.weight, entry.enabled):
                    row.set_values(entry.weight, entry.enabled)
                if row.block_weights != entry.block_weights:
                    row.set_block_weights(entry.block_weights)
                if row.start != entry.start:
                    row.set_start(entry.start)
            item = self.library.item(entry.path)
            row.detail_label.setText(item.arch_label if item is not None else "")
            self.rows_layout.insertWidget(index, row)
        self.stack_hint.setVisible(not stack)
        self.copy_tags_button.setEnabled(bool(stack))
        self.merge_button.setEnabled(any(e.enabled for e in stack))
        self._show_problems()

    def _show_problems(self) -> None:
        for path, row in self._rows.items():
            row.set_problem(self.model.problem(path))

    # ------------------------------------------------------------------ exports
    def export_lora(self, source: str | Path, target: str | Path, layout: str = "kohya") -> None:
        """Write `source` to `target` in `layout` (in the background)."""
        from lora_studio.core.lora.convert import convert_lora

        source, target = Path(source), _with_suffix(target)
        self._say(f"Exporting {source.name}…")
        self._run(lambda: convert_lora(source, target, layout=layout),
                  f"Exported {source.name} as {target} ({layout} layout).")

    def save_merged(self, target: str | Path, layout: str = "kohya") -> bool:
        """Merge the switched-on LoRAs at their strengths into `target` (in the background)."""
        items = [(e.path, e.weight, e.block_weights) for e in self.model.stack if e.enabled]
        if not items:
            self._say("Nothing to merge: switch on at least one LoRA.")
            return False
        late = [e.name for e in self.model.stack if e.enabled and e.start]
        note = (f" Starting later ({', '.join(late)}) is not part of the merge: a LoRA file acts "
                "from the first step." if late else "")
        target = _with_suffix(target)
        base_model, kept = self.model.base_model, []

        def merge() -> Path:
            from lora_studio.core.lora.card import save_lora_with_card
            from lora_studio.core.lora.deltas import ModelBase
            from lora_studio.core.lora.merge import LYCORIS_DEFAULT_RANK, merge_loras

            result = merge_loras(items, title=target.stem, model=ModelBase.of_model(base_model),
                                 lycoris_rank=LYCORIS_DEFAULT_RANK)
            if result.overall_retained is not None:
                kept.append(f" LyCORIS modules re-ranked to {LYCORIS_DEFAULT_RANK}: it keeps "
                            f"{100 * result.overall_retained:.1f} % of the update.")
            kept.extend(f" {n}" for n in result.notes)
            return save_lora_with_card(result.lora, target, layout=layout,
                                       sources=[item[0] for item in items])[0]

        self._say(f"Merging {len(items)} LoRAs…{note}")
        self._run(merge, lambda: f"Saved the merge of {len(items)} LoRAs as {target} ({layout} "
                                 f"layout). It is in the library.{''.join(kept)}{note}")
        return True

    def wait(self, timeout_ms: int = 60_000) -> bool:
        return self._pool.wait(timeout_ms)

    def _run(self, fn, done_text) -> None:
        """Run `fn` in the background; then say `done_text` (a str, or a callable making it)."""
        def done(path: Path) -> None:
            self._say(done_text() if callable(done_text) else done_text)
            self.library.refresh_file(path)
            self.exported.emit(Path(path))

        def failed(exc: BaseException) -> None:
            text = error_text(exc)
            self._say(f"Not saved: {text}")
            self.export_failed.emit(text)

        self._pool.submit(fn, done, failed)

    # ------------------------------------------------------------------ preview
    def _preview_toggled(self, on: bool) -> None:
        self._update_preview_prompt()
        self.preview.set_enabled(on)
        if self._settings is not None:
            self._settings.setValue(KEY_PREVIEW_ON, on)
        if not on:
            self.preview_status.setText("")

    def _preview_prompt_edited(self) -> None:
        if self._settings is not None:
            self._settings.setValue(KEY_PREVIEW_PROMPT, self.preview_prompt.text().strip())
        self._update_preview_prompt()

    def _update_preview_prompt(self) -> None:
        """The preview's prompt: the one typed, else the stack's trigger words."""
        text = self.preview_prompt.text().strip()
        if not text:
            words = []
            for entry in self.model.stack:
                item = self.library.item(entry.path)
                if entry.enabled and item is not None:
                    words += [w for w in item.trigger_words[:1] if w not in words]
            text = ", ".join(words)
        self.preview.set_prompt(text)
        self.grid_panel.update_prompt_hint()  # an empty grid prompt renders this one

    # ------------------------------------------------------------------ settings
    def flush_settings(self) -> None:
        """Write a stack change still waiting for its debounce now (and the preview prompt,
        which may not have left its field)."""
        if self._settings is not None:
            self._settings.setValue(KEY_PREVIEW_PROMPT, self.preview_prompt.text().strip())
        if self._save_timer.isActive():
            self._save_timer.stop()
            self._save_stack()

    def _save_stack(self) -> None:
        if self._settings is not None:
            self._settings.setValue(KEY_STACK, json.dumps(
                [[str(e.path), e.weight, e.enabled,
                  e.block_weights.numbers() if e.block_weights else None]
                 + ([e.start] if e.start else [])
                 for e in self.model.stack]))

    def _restore(self) -> None:
        settings = self._settings
        if settings is None:
            return
        self.preview_prompt.setText(str(settings.value(KEY_PREVIEW_PROMPT, "") or ""))
        try:
            saved = json.loads(str(settings.value(KEY_STACK, "[]") or "[]"))
            entries = [_saved_entry(*item) for item in saved if Path(item[0]).is_file()]
        except (ValueError, TypeError, IndexError):
            entries = []
        if entries:
            self.library.add_files(e.path for e in entries)
            self.model.set_stack(entries)
        self.preview_check.setChecked(str(settings.value(KEY_PREVIEW_ON, "false")).lower()
                                      == "true")

    # ------------------------------------------------------------------ dialogs
    def _say(self, text: str) -> None:
        self.stack_status.setText(text)

    def _add_files_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add LoRA files", "",
                                                f"LoRA files (*{LORA_SUFFIX})")
        self.library.add_files(paths)

    def _add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of LoRAs")
        if folder:
            self.library.add_folder(folder)

    def _remove_selected(self) -> None:
        item = self.library_panel.selected()
        if item is not None:
            self.model.remove_lora(item.path)
            self.library.remove(item.path)

    def _ask_target(self, title: str, name: str) -> tuple[Path | None, str]:
        path, chosen = QFileDialog.getSaveFileName(
            self, title, str(Path.home() / f"{name}{LORA_SUFFIX}"),
            ";;".join(LAYOUT_FILTERS.values()))
        layout = next((k for k, v in LAYOUT_FILTERS.items() if v == chosen), "kohya")
        return (Path(path) if path else None), layout

    def _export_dialog(self) -> None:
        item = self.library_panel.selected()
        if item is None:
            return
        target, layout = self._ask_target(f"Export {item.name}", item.name)
        if target is not None:
            self.export_lora(item.path, target, layout)

    def _merge_dialog(self) -> None:
        names = "_".join(e.path.stem for e in self.model.stack if e.enabled)[:60] or "merged"
        target, layout = self._ask_target("Save the stack as one merged LoRA", f"{names}_merged")
        if target is not None:
            self.save_merged(target, layout)

    # ------------------------------------------------------------------ drag and drop
    @staticmethod
    def accepts_drop(paths: list[Path]) -> bool:
        """LoRA files, or folders holding some (a folder of images is a dataset instead)."""
        return any(p.suffix.lower() == LORA_SUFFIX and p.is_file()
                   or p.is_dir() and next(p.rglob(f"*{LORA_SUFFIX}"), None) is not None
                   for p in paths)

    def drop_paths(self, paths: list[Path]) -> int:
        count = self.library.add_paths(paths)
        self._say(f"Added {count} LoRA file(s) to the library." if count else
                  "No new LoRA files there (.safetensors).")
        return count

    def shutdown(self) -> None:
        self.flush_settings()  # a stack change made just before closing is kept
        self.grid_model.cancel()  # a grid waiting for the preview to stop never starts
        self.preview.stop()  # no debounced render may start once the window goes
        self._pool.shutdown()


def _saved_entry(path: str, weight: float, enabled: bool, blocks: str | None = None,
                 start: float = 0.0) -> StackEntry:
    """A stack entry from its QSettings form (see the module docstring)."""
    try:
        weights = BlockWeights.parse(blocks) if blocks else None
    except StudioError:  # not ours (edited by hand): the LoRA comes back at its plain strength
        weights = None
    start = float(start) if 0 <= float(start) < 1 else 0.0
    return StackEntry(Path(path), float(weight), bool(enabled), weights, start)


def _with_suffix(target: str | Path) -> Path:
    target = Path(target)
    return target if target.suffix.lower() == LORA_SUFFIX else target.with_name(
        target.name + LORA_SUFFIX)
