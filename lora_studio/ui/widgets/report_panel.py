"""The dataset check report as a person reads it: what training will do with the folder.

Folders and repeats, images per epoch, where captions come from, warnings and skipped files,
captions cut at the token window, the bucket table, steps per epoch and epochs, upscaled images,
and what to do next. Image names are links (`row:<n>`, n = the image's row in the grid):
clicking one emits `image_clicked(n)`.
"""

from __future__ import annotations

import re
from html import escape, unescape
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import QLabel, QTextBrowser, QVBoxLayout, QWidget

from lora_studio.core.dataset import DatasetReport
from lora_studio.core.dataset.checks import describe_caption_sources
from lora_studio.core.dataset.plan import DatasetPlan

ROW_SCHEME = "row"
STYLE = ("h4 { margin: 8px 0 2px 0; } ul { margin-left: -18px; } li { margin-bottom: 3px; }"
         " .reason { color: #e0a050; } .warn { color: #e0a050; } .note { color: #9aa0a6; }"
         " a { color: #7aa7ff; text-decoration: none; } td { padding: 1px 10px 1px 0; }"
         " th { padding: 1px 10px 1px 0; text-align: left; color: #9aa0a6; }")


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or path.name
    except ValueError:
        return str(path)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report_summary(report: DatasetReport) -> str:
    """One line of counts, e.g. "12 images usable · 1 skipped · 1 without caption"."""
    return (f"{_plural(report.usable, 'image')} usable · {len(report.skipped)} skipped · "
            f"{len(report.missing_captions)} without caption")


class _Links:
    """Image names as links to their grid row (image and caption file names both link)."""

    def __init__(self, report: DatasetReport) -> None:
        self.rows: dict[Path, int] = {}
        self.names: dict[str, int] = {}
        for row, item in enumerate(report.items):
            self.rows[item.image_path] = row
            self.names.setdefault(item.image_path.name, row)
            if item.caption_path is not None:
                self.names.setdefault(item.caption_path.name, row)
        names = sorted(self.names, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(escape(n)) for n in names)) if names \
            else None

    def to(self, path: Path, text: str) -> str:
        row = self.rows.get(path)
        shown = escape(text)
        return shown if row is None else f"<a href='{ROW_SCHEME}:{row}'>{shown}</a>"

    def in_text(self, text: str) -> str:
        """`text` escaped, with every image or caption file name in it made a link."""
        shown = escape(text)
        if self._pattern is None:
            return shown
        return self._pattern.sub(
            lambda m: f"<a href='{ROW_SCHEME}:{self.names[unescape(m.group(0))]}'>"
                      f"{m.group(0)}</a>", shown)


def _folders_html(report: DatasetReport) -> str:
    kind = {"kohya": "kohya folder", "subsets": "listed folders"}.get(report.layout, "folder")
    parts = [f"<h4>Folders ({escape(kind)})</h4><ul>"]
    for s in report.subsets:
        fallback = s.default_caption or s.kohya_class
        note = (f" <span class='note'>uncaptioned: “{escape(fallback)}”</span>"
                if fallback else "")
        name = s.path.name if s.path == report.root else _rel(s.path, report.root)
        parts.append(f"<li><b>{escape(name)}</b>: {s.repeats} × "
                     f"{_plural(s.images, 'image')} = {s.repeats * s.images} per epoch{note}"
                     "</li>")
    parts.append(f"</ul><p>{_plural(report.usable, 'image')}, "
                 f"<b>{report.images_per_epoch} images per epoch</b></p>")
    return "".join(parts)


def _captions_html(report: DatasetReport, links: _Links) -> str:
    if not report.items:
        return ""
    parts = [f"<h4>Captions</h4><p>{escape(describe_caption_sources(report))}</p>"]
    if report.missing_captions:
        by_path = {item.image_path: item for item in report.items}
        default = report.default_caption
        empty = any(not by_path[p].caption for p in report.missing_captions if p in by_path)
        note = (": set a trigger word / default caption, or write one for each" if empty else
                f": the default caption “{escape(default)}” unless their folder has its own"
                if default else "")
        parts.append(f"<p class='note'>Without a caption file ({len(report.missing_captions)})"
                     f"{note}</p><ul>")
        for path in report.missing_captions:
            item = by_path.get(path)
            caption = (f"“{escape(item.caption)}” ({escape(item.caption_source)})"
                       if item is not None and item.caption else "an empty caption")
            parts.append(f"<li>{links.to(path, _rel(path, report.root))}: trains as {caption}"
                         "</li>")
        parts.append("</ul>")
    return "".join(parts)


def _problems_html(report: DatasetReport, links: _Links) -> str:
    parts: list[str] = []
    if report.skipped:
        parts.append(f"<h4>Skipped ({len(report.skipped)})</h4><ul>")
        parts.extend(f"<li><b>{escape(_rel(s.path, report.root))}</b><br/>"
                     f"<span class='reason'>{escape(s.reason)}</span></li>"
                     for s in report.skipped)
        parts.append("</ul>")
    if report.warnings:
        parts.append(f"<h4>Warnings ({len(report.warnings)})</h4><ul>")
        parts.extend(f"<li class='warn'>{links.in_text(w)}</li>" for w in report.warnings)
        parts.append("</ul>")
    return "".join(parts)


def _long_captions_html(plan: DatasetPlan, links: _Links, counted: bool) -> str:
    if not counted:
        return "<p class='note'>Counting caption tokens…</p>"
    if not plan.long_captions:
        return ""
    parts = [f"<h4>Captions cut at {plan.max_token_length} tokens "
             f"({len(plan.long_captions)})</h4><p class='note'>The text encoder reads "
             f"{plan.max_token_length} tokens; the rest is never learned (max_token_length 150 "
             "or 225 reads more).</p><ul>"]
    for c in plan.long_captions:
        tag = f", cut from “{escape(c.first_dropped_tag)}”" if c.first_dropped_tag else ""
        parts.append(f"<li>{links.to(c.item.image_path, c.item.image_path.name)}: "
                     f"{c.kept} of {c.tokens} tokens kept{tag}</li>")
    parts.append("</ul>")
    return "".join(parts)


def _training_html(plan: DatasetPlan, links: _Links) -> str:
    s, report = plan.settings, plan.report
    if not report.items:
        return ""
    how = ("buckets at their own size, never enlarged" if s.enabled and s.no_upscale else
           f"buckets of about {s.resolution}×{s.resolution}" if s.enabled else
           f"buckets off: every image is a {s.resolution}×{s.resolution} crop")
    parts = [f"<h4>Training ({escape(how)})</h4><table><tr><th>bucket</th><th>images</th>"
             "<th>per epoch</th></tr>"]
    small = []
    for (w, h), count, per_epoch in plan.bucket_rows():
        parts.append(f"<tr><td>{w}×{h}</td><td align='right'>{count}</td>"
                     f"<td align='right'>{per_epoch}</td></tr>")
        if per_epoch < plan.batch_size:
            small.append(f"<li class='warn'>{w}×{h} has {per_epoch} sample(s) per epoch, fewer "
                         f"than the batch size {plan.batch_size}: its batches hold only "
                         f"{per_epoch}.</li>")
    parts.append("</table>")
    if small:
        parts.append("<ul>" + "".join(small) + "</ul>")
    reg = f" + {plan.reg_images} regularization images" if plan.reg_images else ""
    parts.append(f"<p>{report.images_per_epoch} images per epoch{reg}, batch size "
                 f"{plan.batch_size}: <b>{plan.steps_per_epoch} steps per epoch</b>; "
                 f"{plan.total_steps} steps = <b>{plan.epochs:.1f} epochs</b></p>")
    upscaled = plan.upscaled()
    if upscaled:
        parts.append(f"<p class='note'>Upscaled into their bucket ({len(upscaled)}; softer than "
                     "the rest: use larger originals, or bucket_no_upscale):</p><ul>")
        parts.extend(f"<li>{links.to(i.image_path, i.image_path.name)}: {f.original[0]}×"
                     f"{f.original[1]} → {f.bucket[0]}×{f.bucket[1]}</li>" for i, f in upscaled)
        parts.append("</ul>")
    return "".join(parts)


def report_html(report: DatasetReport, plan: DatasetPlan | None = None,
                captions_counted: bool = True) -> str:
    """The report (and, with `plan`, what training does with it) as HTML with row links."""
    links = _Links(report)
    parts = [_folders_html(report) if report.subsets else "", _problems_html(report, links),
             _captions_html(report, links)]
    if plan is not None and plan.report is report and report.items:
        parts += [_long_captions_html(plan, links, captions_counted),
                  _training_html(plan, links)]
    if report.ignored:
        names = ", ".join(escape(_rel(p, report.root) + ("/" if p.is_dir() else ""))
                          for p in report.ignored)
        parts.append(f"<h4>Ignored</h4><p class='note'>Not images or captions: {names}</p>")
    parts.append(f"<p><i>{escape(_next_step(report))}</i></p>")
    return "".join(parts)


def _next_step(report: DatasetReport) -> str:
    if report.usable:
        extra = " Fix or remove the skipped files to train on them too." if report.skipped else ""
        return f"Ready to train on {_plural(report.usable, 'image')}.{extra}"
    if report.skipped:
        return "Nothing usable: every image was skipped. Fix or replace the files listed above."
    return "Nothing usable: no PNG, JPEG, WebP or BMP images directly in this folder."


class ReportPanel(QWidget):
    """Counts on top, the details below; `image_clicked(row)` when an image name is clicked."""

    image_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ReportPanel")
        self.summary = QLabel("No dataset yet.")
        self.summary.setObjectName("ReportSummary")
        self.summary.setWordWrap(True)
        self.details = QTextBrowser()
        self.details.setObjectName("ReportDetails")
        self.details.setOpenLinks(False)
        self.details.anchorClicked.connect(self._on_anchor)
        self.details.document().setDefaultStyleSheet(STYLE)
        self.details.setPlaceholderText("The check report appears here: folders and repeats, "
                                        "skipped files with the reason, captions, buckets and "
                                        "steps per epoch.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.summary)
        layout.addWidget(self.details, 1)

    def show_report(self, report: DatasetReport | None, plan: DatasetPlan | None = None,
                    captions_counted: bool = True) -> None:
        if report is None:
            self.summary.setText("No dataset yet.")
            self.details.clear()
            return
        self.summary.setText(report_summary(report))
        bar = self.details.verticalScrollBar()
        position = bar.value()
        self.details.setHtml(report_html(report, plan, captions_counted))
        bar.setValue(position)  # a caption saved or counted keeps the reader's place

    def show_message(self, text: str) -> None:
        self.summary.setText(text)
        self.details.clear()

    def text(self) -> str:
        """Everything the panel shows, as plain text (for tests and copy)."""
        return f"{self.summary.text()}\n{self.details.toPlainText()}"

    def _on_anchor(self, url: QUrl) -> None:
        if url.scheme() == ROW_SCHEME and url.path().isdigit():
            self.image_clicked.emit(int(url.path()))
