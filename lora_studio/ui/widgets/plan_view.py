"""The open dataset as the Train tab trains it: what a run will do with it, shown above the
Start button (the bucket table with its small-bucket warnings and the epoch arithmetic, as
`format_training` writes them for `lora-studio dataset check` and the training log, so the
three never disagree), its one-line summary and its `[[dataset.subsets]]` tables."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

from lora_studio.core.dataset import DatasetReport
from lora_studio.core.dataset.plan import DatasetPlan, format_training, plan_dataset
from lora_studio.core.errors import ConfigError
from lora_studio.core.train.config import TrainConfig
from lora_studio.ui.workers import TaskPool

# The settings the dataset plan (buckets, steps per epoch) depends on.
PLAN_KEYS = {"*", "dataset.path", "dataset.resolution", "dataset.enable_bucket",
             "dataset.min_bucket_reso", "dataset.max_bucket_reso", "dataset.bucket_reso_steps",
             "dataset.bucket_no_upscale", "dataset.repeats", "train.batch_size",
             "train.gradient_accumulation", "train.steps", "train.max_train_epochs",
             "train.seed"}
SYNC_IMAGES = 400  # datasets up to this size are planned in the GUI thread (< ~15 ms)
MAX_LISTED = 3  # images listed under "Upscaled..." before "... and N more"


def compact_lines(lines: list[str], max_listed: int = MAX_LISTED) -> list[str]:
    """`format_training` lines with each list of images (indented two spaces, under a line
    ending in ':') cut to `max_listed` entries; the bucket table stays whole."""
    out: list[str] = []
    listed = hidden = 0
    in_list = False
    for line in lines:
        item = line.startswith("  ") and not line.startswith("    ")
        if in_list and item:
            listed += 1
            if listed > max_listed:
                hidden += 1
                continue
        else:
            if hidden:
                out.append(f"  … and {hidden} more")
            listed = hidden = 0
            in_list = line.endswith(":") and not line.startswith("Buckets")
        out.append(line)
    if hidden:
        out.append(f"  … and {hidden} more")
    return out


class PlanView(QWidget):
    """A compact, scrollable text of the training plan; hidden when there is none."""

    planned = Signal(object)  # the DatasetPlan shown (None: no dataset, or settings that fail)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pool = TaskPool(max_threads=1, parent=self)
        self._asked = 0
        self.setObjectName("PlanView")
        self.label = QLabel()
        self.label.setObjectName("PlanText")
        self.label.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.label.setWordWrap(True)
        self.label.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.label.setToolTip("What training does with this dataset and these settings: the "
                              "aspect-ratio buckets its images fall into and how many steps an "
                              "epoch has (the same plan `lora-studio dataset check` prints).")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.StyledPanel)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(self.label)
        self.scroll = scroll
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addWidget(scroll)
        self.lines: list[str] = []
        self.setVisible(False)

    def show_dataset(self, report: DatasetReport | None, cfg: TrainConfig,
                     label_for: Callable[[str], str] = lambda key: "") -> None:
        """Plan `report` with `cfg`'s settings (no image is decoded, no caption tokenized) and
        show it; `planned` then carries the plan. A bucket setting that cannot work is shown
        instead, by its label. Up to SYNC_IMAGES images are planned at once (a few ms), a
        larger dataset in the background (2000 images take ~60 ms): only the newest request
        is shown."""
        self._asked += 1
        self._pool.cancel_pending()
        if report is None or not report.items:
            self.clear()
            self.planned.emit(None)
            return
        try:
            settings = cfg.bucket_settings()
            settings.validate()
        except ConfigError as exc:
            self.show_problem(f"{label_for(exc.key) or exc.key}: {exc.user_message()}")
            self.planned.emit(None)
            return
        snapshot = dataclasses.replace(report, items=list(report.items),
                                       subsets=list(report.subsets))
        repeats = [s.repeats for s in report.subsets]  # as the Dataset tab has them now

        def plan() -> DatasetPlan:
            tr = cfg.train
            return plan_dataset(with_repeats(snapshot, cfg.dataset.repeats, repeats),
                                settings=settings, batch_size=tr.batch_size,
                                gradient_accumulation=tr.gradient_accumulation, steps=tr.steps,
                                max_train_epochs=tr.max_train_epochs, seed=tr.seed,
                                check_captions=False)

        asked = self._asked
        if len(report.items) <= SYNC_IMAGES:
            self._planned(asked, plan())
        else:
            self._pool.submit(plan, lambda result: self._planned(asked, result),
                              lambda exc: self._planned(asked, None, exc))

    def wait(self, timeout_ms: int = 10_000) -> bool:
        """Wait for a background plan (tests)."""
        return self._pool.wait(timeout_ms)

    def shutdown(self) -> None:
        self._pool.shutdown()

    def _planned(self, asked: int, plan: DatasetPlan | None,
                 exc: BaseException | None = None) -> None:
        if asked != self._asked:
            return  # a newer request is on its way
        if plan is None:
            self.show_problem(f"Cannot plan the dataset: {exc}")
        else:
            self.show_plan(format_training(plan))
        self.planned.emit(plan)

    def show_plan(self, lines: list[str]) -> None:
        self.lines = compact_lines(lines)
        self.label.setText("\n".join(self.lines))
        self._fit()
        self.setVisible(bool(self.lines))

    def show_problem(self, text: str) -> None:
        self.lines = [text]
        self.label.setText(text)
        self._fit()
        self.setVisible(True)

    def clear(self) -> None:
        self.lines = []
        self.label.clear()
        self.setVisible(False)

    def text(self) -> str:
        return self.label.text()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        """As tall as the text (wrapped at the current width), up to 8 rows; then it scrolls."""
        metrics = self.label.fontMetrics()
        width = self.scroll.viewport().width() or self.width() or 400
        chars = max(20, (width - 8) // max(1, metrics.horizontalAdvance("x")))
        rows = sum(max(1, -(-len(line) // chars)) for line in self.lines) or 1
        self.scroll.setFixedHeight(min(8, rows) * metrics.lineSpacing() + 14)


def subset_tables(report: DatasetReport, cfg: TrainConfig) -> list[dict]:
    """The `[[dataset.subsets]]` tables of a "subsets" report (none for one folder or a kohya
    folder: those train from `report.root`). A folder's own caption extension is written
    only when it differs from dataset.caption_extension."""
    if report.layout != "subsets":
        return []
    tables = []
    for subset in report.subsets:
        table = {"path": str(subset.path), "repeats": subset.repeats,
                 "default_caption": subset.default_caption}
        if subset.caption_extension and subset.caption_extension != \
                cfg.dataset.caption_extension:
            table["caption_extension"] = subset.caption_extension
        tables.append(table)
    return tables


def dataset_summary(report: DatasetReport) -> str:
    """"train: 3 folders, 5 images, 27 per epoch · trigger “zqstar”" (one folder: no folder
    count, and the epoch only when repeats make it differ)."""
    parts = []
    if report.layout != "folder" or len(report.subsets) > 1:
        parts.append(_plural(len(report.subsets), "folder"))
    parts.append(_plural(report.usable, "image"))
    if parts[0].endswith(("folder", "folders")) or report.images_per_epoch != report.usable:
        parts.append(f"{report.images_per_epoch} per epoch")
    trigger = f" · trigger “{report.default_caption}”" if report.default_caption else ""
    return f"{report.root.name}: {', '.join(parts)}{trigger}"


def with_repeats(report: DatasetReport, repeats: int,
                 folder_repeats: list[int] | None = None) -> DatasetReport:
    """`report` with every image's repeats as its folder has them (`folder_repeats`, default
    the report's subsets: the Dataset tab edits them) times dataset.repeats."""
    counts = [s.repeats for s in report.subsets] if folder_repeats is None else folder_repeats
    items = []
    for item in report.items:
        copied = copy.copy(item)
        copied.repeats = (counts[item.subset] if item.subset < len(counts)
                          else item.repeats) * repeats
        items.append(copied)
    return dataclasses.replace(report, items=items)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


__all__ = ["PLAN_KEYS", "PlanView", "compact_lines", "dataset_summary", "subset_tables",
           "with_repeats"]
