"""The dataset check report as a person reads it: counts, skipped files with reasons, images
without a caption, and what to do next."""

from __future__ import annotations

from html import escape
from pathlib import Path

from PySide6.QtWidgets import QLabel, QTextBrowser, QVBoxLayout, QWidget

from lora_studio.core.dataset import DatasetReport


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report_summary(report: DatasetReport) -> str:
    """One line of counts, e.g. "12 images usable · 1 skipped · 1 without caption"."""
    return (f"{_plural(report.usable, 'image')} usable · {len(report.skipped)} skipped · "
            f"{len(report.missing_captions)} without caption")


def report_html(report: DatasetReport) -> str:
    root = report.root
    parts: list[str] = []
    if report.skipped:
        parts.append(f"<h4>Skipped ({len(report.skipped)})</h4><ul>")
        parts.extend(f"<li><b>{escape(_rel(s.path, root))}</b><br/>"
                     f"<span class='reason'>{escape(s.reason)}</span></li>" for s in report.skipped)
        parts.append("</ul>")
    if report.missing_captions:
        default = report.default_caption
        note = (f"these train with the default caption “{escape(default)}”" if default
                else "set a trigger word / default caption, or write one for each")
        parts.append(f"<h4>Without caption ({len(report.missing_captions)})</h4>"
                     f"<p class='note'>{note}</p><ul>")
        parts.extend(f"<li>{escape(_rel(p, root))}</li>" for p in report.missing_captions)
        parts.append("</ul>")
    if report.ignored:
        names = ", ".join(escape(_rel(p, root) + ("/" if p.is_dir() else ""))
                          for p in report.ignored)
        parts.append(f"<h4>Ignored</h4><p class='note'>Not images or captions: {names}</p>")
    if not parts:
        parts.append("<p>Every image is usable and captioned.</p>")
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
    """Counts on top, the details (skipped with reasons, missing captions) below."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ReportPanel")
        self.summary = QLabel("No dataset yet.")
        self.summary.setObjectName("ReportSummary")
        self.summary.setWordWrap(True)
        self.details = QTextBrowser()
        self.details.setObjectName("ReportDetails")
        self.details.setOpenLinks(False)
        self.details.document().setDefaultStyleSheet(
            "h4 { margin: 6px 0 2px 0; } ul { margin-left: -18px; } li { margin-bottom: 4px; }"
            " .reason { color: #e0a050; } .note { color: #9aa0a6; }")
        self.details.setPlaceholderText("The check report appears here: skipped files with the "
                                        "reason, and images without a caption.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.summary)
        layout.addWidget(self.details, 1)

    def show_report(self, report: DatasetReport | None) -> None:
        if report is None:
            self.summary.setText("No dataset yet.")
            self.details.clear()
            return
        self.summary.setText(report_summary(report))
        self.details.setHtml(report_html(report))

    def show_message(self, text: str) -> None:
        self.summary.setText(text)
        self.details.clear()

    def text(self) -> str:
        """Everything the panel shows, as plain text (for tests and copy)."""
        return f"{self.summary.text()}\n{self.details.toPlainText()}"
