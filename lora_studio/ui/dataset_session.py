"""The Dataset tab's view-model: the open folder (or the folders listed in its place), the
training settings the tab was last given, the checked report and its plan.

Every check, plan, token count and "what the model sees" preview runs in a `TaskPool`; results
come back in the GUI thread, and a result for an older request is dropped (generation counters).
The session never touches a widget: the tab listens to its signals.

A scan runs `check_dataset` and `plan_dataset` (without the token count, so the grid and the
report appear at once); the captions are then counted against the token window in a second task
(the tokenizer takes about a second to load the first time). A new training config re-plans
the report it has (no re-scan) unless a setting that changes what the check finds changed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtGui import QImage

from lora_studio.core.dataset.checks import min_image_side
from lora_studio.core.dataset.plan import DatasetPlan, plan_from_config
from lora_studio.core.dataset.scan import DatasetItem, DatasetReport
from lora_studio.core.dataset.subsets import kohya_folder
from lora_studio.core.fileio import atomic_write_text
from lora_studio.core.train.config import TrainConfig
from lora_studio.ui.dataset_work import (
    apply_fallbacks,
    check_and_plan,
    count_long_captions,
    load_tokenizer,
    measure_caption,
    preview_of,
    record_saved_caption,
    record_tag_changes,
    restore_captions,
    run_doctor,
    tag_edit,
    undo_tag_edit,
)
from lora_studio.ui.widgets.image_grid import load_thumbnail
from lora_studio.ui.workers import TaskPool

KEY_SUBSETS = "dataset/folder_subsets"  # JSON: {opened folder: [subset tables]}


@dataclass
class FolderRow:
    """One folder of the dataset as the Folders box shows it."""

    path: Path
    images: int
    repeats: int  # its own repeats (before dataset.repeats multiplies them)
    per_epoch: int
    caption: str  # what its images without a caption file train with ("" = the next fallback)


def _scan_key(cfg: TrainConfig) -> tuple:
    """The settings that change what the check finds (the others only change the plan)."""
    d = cfg.dataset
    return (d.caption_extension, d.repeats, min_image_side(d.resolution))


def _training_settings(cfg: TrainConfig) -> TrainConfig:
    """A copy of `cfg` without what the Dataset tab owns: the folder (or listed folders) and
    the default caption. The trigger word goes too: the Train tab makes it the default caption
    of the report it is given, so keeping it would make each new report a new config, and a
    new check, without end."""
    new = copy.deepcopy(cfg)
    d = new.dataset
    d.path, d.subsets, d.default_caption, d.trigger_word = "", [], "", ""
    return new


class _Latest:
    """Hands a pool result on only when no newer request of the same kind was made since."""

    def __init__(self) -> None:
        self.generation = 0

    def next(self) -> int:
        self.generation += 1
        return self.generation

    def wrap(self, generation: int, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        return lambda value: fn(value) if generation == self.generation else None


class DatasetSession(QObject):
    """Signals (GUI thread): `scan_started()`; `scanned(report)` with the new report (its plan
    in `plan`); `scan_failed(exception)`; `plan_changed(plan)` when a re-plan or the token
    count arrived; `caption_measured(window)`; `preview_ready(SeenPreview | None)`;
    `preview_failed(exception)`; `plan_failed(exception)` when the settings cannot plan the
    report (it is kept); `doctor_ready(DoctorReport)` / `doctor_failed(exception)`;
    `tags_edited(changes)` after a tag edit or its undo was written and the report updated in
    place, `tags_lacking(image paths)`, `tags_failed(exception)`."""

    scan_started = Signal()
    scanned = Signal(object)
    scan_failed = Signal(object)
    plan_changed = Signal(object)
    plan_failed = Signal(object)
    caption_measured = Signal(object)
    preview_ready = Signal(object)
    preview_failed = Signal(object)
    thumbnail = Signal(int, object)  # (row, QImage; a null one when it cannot be read)
    doctor_ready = Signal(object)
    doctor_failed = Signal(object)
    tags_edited = Signal(object)
    tags_lacking = Signal(object)
    tags_failed = Signal(object)

    def __init__(self, settings: QSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._config = TrainConfig()
        self.folder: Path | None = None
        self.subsets: list[dict[str, Any]] | None = None  # the folders listed in its place
        self.default_caption = ""
        self.report: DatasetReport | None = None
        self.plan: DatasetPlan | None = None
        self.scanning = False
        self.captions_checked = False  # plan.long_captions is counted
        self._closed = False
        self._pool = TaskPool(max_threads=1, parent=self)  # scans and plans, in order
        self._side_pool = TaskPool(max_threads=1, parent=self)  # token counts and previews
        self._thumb_pool = TaskPool(max_threads=2, parent=self)
        self._tool_pool = TaskPool(max_threads=1, parent=self)  # the doctor and tag edits
        self._scan, self._plan = _Latest(), _Latest()
        self._measure, self._preview, self._thumbs = _Latest(), _Latest(), _Latest()
        self._doctor = _Latest()
        self._undo: list[tuple[list, DatasetReport, Any]] = []  # applied tag edits, last last

    # ------------------------------------------------------------------ settings
    @property
    def config(self) -> TrainConfig:
        return self._config

    def set_config(self, cfg: TrainConfig) -> None:
        """Plan with `cfg`'s training settings from now on (a copy): a re-plan, or a new check
        when the check itself changes (or one is running with the old settings)."""
        new = _training_settings(cfg)
        if new == self._config:
            return
        old, self._config = self._config, new
        if self.folder is None:
            return
        if self.report is None or self.scanning or _scan_key(old) != _scan_key(new):
            self.scan()
        else:
            self.replan()

    # ------------------------------------------------------------------ folders
    def open(self, folder: Path) -> None:
        """Make `folder` the dataset (with the folder list remembered for it), then scan."""
        self.folder = Path(folder)
        saved = self._saved_subsets().get(str(self.folder))
        kept = [s for s in saved or [] if Path(str(s.get("path", ""))).is_dir()]
        self.subsets = kept or None
        self.scan()

    def folder_rows(self) -> list[FolderRow]:
        if self.report is None:
            return []
        multiplier = max(1, self._config.dataset.repeats)
        return [FolderRow(s.path, s.images, max(1, s.repeats // multiplier), s.repeats * s.images,
                          s.default_caption or s.kohya_class) for s in self.report.subsets]

    def set_repeats(self, index: int, repeats: int) -> None:
        self._edit(index, "repeats", int(repeats))

    def set_folder_caption(self, index: int, caption: str) -> None:
        self._edit(index, "default_caption", caption.strip())

    def add_folder(self, path: Path) -> None:
        """List `path` too (a kohya `N_name` folder brings its repeats and class)."""
        path = Path(path)
        tables = self._explicit()
        if any(Path(t["path"]).resolve() == path.resolve() for t in tables):
            return  # listed already: its images would train twice
        kohya = kohya_folder(path.name)
        table = {"path": str(path), "repeats": kohya[0] if kohya else 1,
                 "default_caption": kohya[1] if kohya else ""}
        self._set_subsets(tables + [table])

    def remove_folder(self, index: int) -> None:
        tables = self._explicit()
        if len(tables) > 1 and 0 <= index < len(tables):
            del tables[index]
            self._set_subsets(tables)

    def reset_folders(self) -> None:
        """Back to the folders the opened folder itself holds."""
        self._set_subsets(None)

    def _edit(self, index: int, key: str, value: Any) -> None:
        tables = self._explicit()
        if 0 <= index < len(tables) and tables[index].get(key) != value:
            tables[index][key] = value
            self._set_subsets(tables)

    def _explicit(self) -> list[dict[str, Any]]:
        """The dataset as a list of subset tables (path, repeats, default caption)."""
        if self.subsets is not None:
            return [dict(s) for s in self.subsets]
        return [{"path": str(row.path), "repeats": row.repeats, "default_caption": row.caption}
                for row in self.folder_rows()]

    def _set_subsets(self, tables: list[dict[str, Any]] | None) -> None:
        self.subsets = tables
        saved = self._saved_subsets()
        if tables is None:
            saved.pop(str(self.folder), None)
        else:
            saved[str(self.folder)] = tables
        self._settings.setValue(KEY_SUBSETS, json.dumps(saved))
        self.scan()

    def _saved_subsets(self) -> dict[str, list[dict[str, Any]]]:
        try:
            saved = json.loads(str(self._settings.value(KEY_SUBSETS, "") or "{}"))
        except ValueError:
            return {}
        return saved if isinstance(saved, dict) else {}

    # ------------------------------------------------------------------ scanning and planning
    def scan_config(self) -> TrainConfig:
        """The training config with this dataset (folder or listed folders) in [dataset]."""
        cfg = copy.deepcopy(self._config)
        cfg.dataset.path = str(self.folder) if self.folder else ""
        cfg.dataset.subsets = [dict(s) for s in self.subsets] if self.subsets else []
        cfg.dataset.default_caption = self.default_caption
        return cfg

    def scan(self) -> None:
        if self.folder is None or self._closed:
            return
        generation = self._scan.next()
        self._plan.next()  # a plan or token count still running is for the old report
        self.scanning = True
        self.scan_started.emit()
        cfg = self.scan_config()
        self._pool.submit(lambda: check_and_plan(cfg),
                          self._scan.wrap(generation, self._on_scanned),
                          self._scan.wrap(generation, self._on_scan_failed))

    def replan(self) -> None:
        """Plan the current report again with the current settings (tokens counted too)."""
        report = self.report
        if report is None:
            return
        generation = self._plan.next()
        cfg = self.scan_config()
        self._pool.submit(lambda: plan_from_config(cfg, report=report,
                                                   tokenizer=load_tokenizer()),
                          self._plan.wrap(generation, self._on_planned),
                          self._plan.wrap(generation, self.plan_failed.emit))

    def recheck_captions(self) -> None:
        """Count the captions against the token window again (after a caption changed)."""
        plan = self.plan
        if plan is None:
            return
        generation = self._plan.next()
        cfg = self.scan_config()
        self._pool.submit(lambda: count_long_captions(plan.report, cfg),
                          self._plan.wrap(generation, lambda found: self._on_counted(plan, found)),
                          self._plan.wrap(generation, self.plan_failed.emit))

    def _on_scanned(self, result: tuple[DatasetReport, DatasetPlan]) -> None:
        self.report, self.plan = result
        self.scanning = False
        self.captions_checked = not self.report.items
        self.scanned.emit(self.report)
        if self.report.items:
            self.recheck_captions()

    def _on_scan_failed(self, exc: BaseException) -> None:
        self.scanning = False
        self.report = self.plan = None
        self.scan_failed.emit(exc)

    def _on_planned(self, plan: DatasetPlan) -> None:
        self.plan, self.captions_checked = plan, True
        self.plan_changed.emit(plan)

    def _on_counted(self, plan: DatasetPlan, found: list) -> None:
        if plan is self.plan:
            plan.long_captions, self.captions_checked = found, True
            self.plan_changed.emit(plan)

    # ------------------------------------------------------------------ captions
    def apply_default_caption(self, text: str) -> bool:
        """Use `text` for images without a caption file; True when the report changed."""
        self.default_caption = text.strip()
        if self.report is None or self.report.default_caption == self.default_caption:
            return False
        apply_fallbacks(self.report, self.default_caption, self._config.dataset.trigger_word)
        self.recheck_captions()
        return True

    def save_caption(self, item: DatasetItem, text: str) -> Path:
        """Write `text` as `item`'s caption file (atomically; "" writes an empty file, an
        explicit empty caption) and update the report; returns the file. Raises OSError."""
        subset = self.report.subsets[item.subset]
        target = item.caption_path or item.image_path.with_suffix(subset.caption_extension)
        atomic_write_text(target, text)
        record_saved_caption(self.report, item, text, target)
        if not self.scanning:
            self.recheck_captions()
        return target

    def measure(self, text: str) -> None:
        """Count `text`'s tokens in the pool; `caption_measured(window)` follows."""
        generation = self._measure.next()
        cfg = self._config
        self._side_pool.submit(lambda: measure_caption(text, cfg),
                               self._measure.wrap(generation, self.caption_measured.emit),
                               lambda exc: None)  # the editor simply shows no count

    def request_preview(self, image: Path | None) -> None:
        """Make what the model sees of `image` in the pool; `preview_ready` follows."""
        generation = self._preview.next()
        plan, cfg = self.plan, self.scan_config()
        if plan is None or image is None:
            self.preview_ready.emit(None)
            return
        self._side_pool.submit(lambda: preview_of(plan, cfg, image),
                               self._preview.wrap(generation, self.preview_ready.emit),
                               self._preview.wrap(generation, self.preview_failed.emit))

    def load_thumbnails(self) -> None:
        """Decode the report's thumbnails in the pool; `thumbnail(row, image)` for each."""
        generation = self._thumbs.next()
        self._thumb_pool.cancel_pending()
        for row, item in enumerate(self.report.items if self.report else []):
            self._thumb_pool.submit(
                lambda p=item.image_path: load_thumbnail(p),
                self._thumbs.wrap(generation, lambda image, r=row: self.thumbnail.emit(r, image)),
                self._thumbs.wrap(generation, lambda exc, r=row: self.thumbnail.emit(r, QImage())))

    # ------------------------------------------------------------------ doctor and tag tools
    def run_doctor(self) -> None:
        """Diagnose the dataset with the current settings in the pool; `doctor_ready` follows."""
        if self.folder is None or self._closed:
            return
        generation = self._doctor.next()
        cfg = self.scan_config()
        self._tool_pool.submit(lambda: run_doctor(cfg),
                               self._doctor.wrap(generation, self.doctor_ready.emit),
                               self._doctor.wrap(generation, self.doctor_failed.emit))

    @property
    def can_undo_tags(self) -> bool:
        return bool(self._undo)

    def edit_tags(self, operation: str, text: str, other: str = "",
                  images: list[Path] | None = None) -> bool:
        """Run a tag operation (`dataset_work.TAG_OPERATIONS`) over every image, or `images`,
        in the pool: the files are written there, the report updated here; False when there is
        no checked report to edit."""
        from lora_studio.core.dataset.tags import targets_from_report

        report = self.report
        if report is None or self.scanning or self._closed:
            return False
        targets = targets_from_report(report)
        if images is not None:
            chosen = set(images)
            targets = [t for t in targets if t.image_path in chosen]
        self._tool_pool.submit(lambda: tag_edit(targets, operation, text, other),
                               lambda result: self._on_tags_done(report, operation, result),
                               self.tags_failed.emit)
        return True

    def undo_tags(self) -> bool:
        """Put back the files of the last tag edit (exactly) in the pool."""
        if not self._undo or self._closed:
            return False
        changes, report, before = entry = self._undo.pop()
        self._tool_pool.submit(lambda: undo_tag_edit(changes),
                               lambda done: self._on_tags_undone(report, before, done),
                               lambda exc: (self._undo.append(entry), self.tags_failed.emit(exc)))
        return True

    def _on_tags_done(self, report: DatasetReport, operation: str, result: list) -> None:
        if operation == "missing":
            self.tags_lacking.emit([t.image_path for t in result])
            return
        if result:  # (no change: nothing was written)
            current = report is self.report and not self.scanning
            before = record_tag_changes(report, result) if current else None
            self._undo.append((result, report, before))
            self._after_tag_files(current)
        self.tags_edited.emit(result)

    def _on_tags_undone(self, report: DatasetReport, before: Any, changes: list) -> None:
        current = report is self.report and not self.scanning and before is not None
        if current:
            restore_captions(report, before)
        self._after_tag_files(current)
        self.tags_edited.emit(changes)

    def _after_tag_files(self, updated: bool) -> None:
        """Count the captions again after the report was updated in place; check the folder
        again when the report the edit was planned on has been replaced since."""
        if updated:
            self.recheck_captions()
        elif not self.scanning:
            self.scan()

    def shutdown(self) -> None:
        """Drop every pending result and wait for running work; no scan starts after this."""
        self._closed = True
        for latest in (self._scan, self._plan, self._measure, self._preview, self._thumbs,
                       self._doctor):
            latest.next()
        for pool in (self._pool, self._side_pool, self._thumb_pool, self._tool_pool):
            pool.shutdown()
