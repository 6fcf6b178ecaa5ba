"""Screenshots of every tab for the docs: `python -m lora_studio.ui.screenshot [OUT_DIR]`.

Opens the window offscreen with its own throw-away settings, loads a dataset (the shipped
sample by default), waits for the thumbnails, trains two real LoRAs on the built-in tiny model
in the Train tab (so its picture shows a real run; the main one 40 steps, or the quickstart's
1500 with `lora-studio screenshot --steps 1500`, as the README's pictures are made), stacks
both on the Mix tab's sliders with the live preview on, renders a few images with the stack in
the Generate tab, and saves one PNG per tab.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

SIZE = (1280, 800)
SCREENSHOT_STEPS = 40
SCREENSHOT_SAMPLE_EVERY = 8


def _wait_until(app, condition, timeout_s: float = 20.0) -> bool:
    from PySide6.QtCore import QDeadlineTimer, QEventLoop, QThread

    deadline = QDeadlineTimer(int(timeout_s * 1000))
    while not condition():
        if deadline.hasExpired():
            return False
        app.processEvents(QEventLoop.AllEvents, 50)
        QThread.msleep(10)
    return True


def _real_training(app, window, work_dir: Path, name: str = "zqstar",
                   steps: int = SCREENSHOT_STEPS, rank: int = 8) -> bool:
    """Train a real LoRA on the built-in tiny model from the Train tab (as a person would: the
    form, then Start), so its screenshot shows a real loss curve, real previews and the saved
    file. About 10-30 s on a 2-core CPU at 40 steps, 4 minutes at the quickstart's 1500.
    Returns whether the run finished."""
    tab = window.train_tab
    form = tab.form
    window.model_picker.choose(None)  # the built-in tiny model
    form.steps_spin.setValue(steps)
    form.rank_spin.setValue(rank)
    form.sample_every_spin.setValue(max(SCREENSHOT_SAMPLE_EVERY, steps // 5))
    form.sample_steps_spin.setValue(12)
    form.prompts_edit.setPlainText("zqstar, a large red star on a white background")
    form.name_edit.setText(name)
    form.output_edit.setText(str(work_dir / "loras" / name))
    if not tab.start_training():
        return False
    return _wait_until(app, lambda: not window.runner.is_running, max(240.0, steps * 2.0))


def _real_mix(app, window, loras: list[Path], timeout_s: float = 120.0) -> bool:
    """Stack the trained LoRAs on the Mix tab (1.0 and 0.4) with the live preview on."""
    tab = window.mix_tab
    library = window.library
    _wait_until(app, lambda: all(library.item(p) is not None and not library.item(p).loading
                                 for p in loras), 30.0)
    for path, weight in zip(loras, (1.0, 0.4)):
        tab.add_to_stack(path)
        row = tab.row(path)
        if row is not None:
            row.spin.setValue(weight)
    if loras:
        tab.library_panel.select(loras[0])
    tab.preview_prompt.setText("zqstar, a large purple star on a gray background")
    tab.preview_prompt.editingFinished.emit()
    tab.preview_check.setChecked(True)
    return _wait_until(app, lambda: tab.preview.renders_shown > 0 and not tab.preview.pending
                       and not window.runner.is_running, timeout_s)


def _real_generation(app, window, work_dir: Path, timeout_s: float = 120.0) -> bool:
    """Render 4 real images on the built-in tiny model from the Generate tab, with the LoRAs
    just stacked on the Mix tab, so its screenshot shows real results in the gallery."""
    tab = window.generate_tab
    tab.set_output_dir(work_dir / "outputs")
    form = tab.form
    form.prompt_edit.setPlainText("zqstar, a large yellow star on a black background")
    form.negative_edit.setPlainText("")
    form.cfg_spin.setValue(5.0)
    form.steps_spin.setValue(20)
    form.seed_edit.setText("1234")
    form.count_spin.setValue(4)
    form.sampler_combo.setCurrentText("Euler a")
    if not tab.generate():
        return False
    done = _wait_until(app, lambda: not window.runner.is_running, timeout_s)
    if tab.gallery.count():
        tab.gallery.setCurrentRow(0)
    return done


@contextlib.contextmanager
def _offscreen_window(size: tuple[int, int]):
    """An offscreen main window with throw-away settings and a throw-away user data folder (the
    Mix library shows only what is made here); closed, and the environment restored, after.
    Yields (app, window, temporary folder)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings

    from lora_studio.ui.app import create_application
    from lora_studio.ui.main_window import MainWindow

    app = create_application([sys.argv[0]])
    with tempfile.TemporaryDirectory() as tmp:
        home_before = os.environ.get("LORA_STUDIO_HOME")
        os.environ["LORA_STUDIO_HOME"] = str(Path(tmp) / "home")
        settings = QSettings(str(Path(tmp) / "screenshot.ini"), QSettings.IniFormat)
        window = MainWindow(settings, restore_dataset=False, probe_device=False)
        window.status.set_device("CPU")
        window.resize(*size)
        window.show()
        try:
            yield app, window, Path(tmp)
        finally:
            window.runner.stop()  # a job left running (a slow machine) must not ask to quit
            window.close()
            window.deleteLater()
            if home_before is None:
                os.environ.pop("LORA_STUDIO_HOME", None)
            else:
                os.environ["LORA_STUDIO_HOME"] = home_before


def take_screenshots(out_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str] |
                     None = None, steps: int = SCREENSHOT_STEPS) -> list[Path]:
    """Save `dataset.png`, `train.png`, `mix.png`, `generate.png` into `out_dir`; returns them.
    `steps`: of the main LoRA (a second one, 16 steps at rank 4, is stacked beside it)."""
    from lora_studio.core.paths import sample_dataset_dir

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = Path(dataset_dir) if dataset_dir else sample_dataset_dir()
    with _offscreen_window(SIZE) as (app, window, tmp):
        window.open_paths([dataset])
        tab = window.dataset_tab
        _wait_until(app, lambda: tab.report is not None and not tab.is_scanning
                    and tab.model.thumbnails_loaded() == tab.model.rowCount())
        if tab.model.rowCount() > 1:
            tab.select_row(1)
        trained = []
        for name, run_steps, rank in (("zqstar_soft", 16, 4), ("zqstar", steps, 8)):
            if _real_training(app, window, tmp, name, run_steps, rank) and \
                    window.train_tab.trained_lora is not None:
                trained.append(window.train_tab.trained_lora)
        _real_mix(app, window, trained[::-1])
        _real_generation(app, window, tmp)
        paths = []
        for index in range(window.tabs.count()):
            window.tabs.setCurrentIndex(index)
            if window.tabs.currentWidget() is window.train_tab:
                window.train_tab.memory.wait()  # the estimate above Start, once it is shown
            _wait_until(app, lambda: False, 0.2)  # let layouts settle and paint
            path = out / f"{window.tabs.tabText(index).lower()}.png"
            window.grab().save(str(path))
            paths.append(path)
    return paths


def take_workbench_screenshots(out_dir: str | os.PathLike[str], dataset_dir: str |
                               os.PathLike[str], resolution: int = 512,
                               image: str = "") -> list[Path]:
    """Save `dataset-workbench.png` (a kohya folder open: its folders and repeats, the report
    scrolled to the bucket table, "What the model sees" of `image` (default: the first
    portrait)) and `train-plan.png` (the Train tab with the bucket table above Start) at
    `resolution` (the README's pictures: SD 1.5's 512). No training."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _offscreen_window((1400, 900)) as (app, window, _tmp):
        from PySide6.QtGui import QTextCursor

        window.train_tab.form.resolution_spin.setValue(resolution)
        window.open_paths([Path(dataset_dir)])
        tab = window.dataset_tab
        _wait_until(app, lambda: tab.report is not None and not tab.is_scanning
                    and tab.model.thumbnails_loaded() == tab.model.rowCount(), 60.0)
        items = tab.report.items if tab.report else []
        chosen = next((i for i, item in enumerate(items) if item.image_path.name == image
                       or (not image and item.size[1] > item.size[0])), 0)
        tab.select_row(chosen)
        tab.side_panel.caption_tabs.setCurrentWidget(tab.model_sees)
        _wait_until(app, lambda: False, 3.0)  # the preview and token counts come from pools
        details = tab.report_panel.details
        found = details.document().find("Buckets")
        if not found.isNull():
            details.setTextCursor(found)
            details.moveCursor(QTextCursor.End)
            details.setTextCursor(found)
            details.ensureCursorVisible()
        paths = [out / "dataset-workbench.png", out / "train-plan.png"]
        _wait_until(app, lambda: False, 0.3)
        window.grab().save(str(paths[0]))
        window.tabs.setCurrentWidget(window.train_tab)
        _wait_until(app, lambda: False, 1.0)
        window.grab().save(str(paths[1]))
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = args[0] if args else "docs/screenshots"
    dataset = args[1] if len(args) > 1 else None
    for path in take_screenshots(out, dataset):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
