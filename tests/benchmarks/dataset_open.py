"""Benchmark: opening a folder of 2,000 photos, first time and again (the scan cache).

Run:  python tests/benchmarks/dataset_open.py [--count 2000] [--dir FOLDER] [--no-gui]

Writes COUNT JPEGs of mixed sizes and aspect ratios (448-1280 px sides, booru-style captions on
most) into a temporary folder (or uses --dir), then measures, side by side in one process:
  * core: `check_dataset` cold (every image decoded) and warm (the cache keyed by path, size and
    mtime), and `plan_dataset` (buckets, steps per epoch) of the result;
  * app: the Dataset tab opening the folder (scan in the background, thumbnails streaming in),
    first and second time: seconds until the report shows, until every thumbnail is in, and the
    GUI event loop's stalls (gaps between 5 ms timer ticks: p50, p99, max).
Prints seconds and the warm / cold ratios. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TAGS = ["1girl", "solo", "smile", "outdoors", "blue sky", "long hair", "looking at viewer",
        "day", "tree", "dress", "standing", "cloud", "grass", "holding", "flower"]


def write_photos(folder: Path, count: int) -> None:
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = rng.randrange(448, 1281, 8), rng.randrange(448, 1281, 8)
        img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            box = sorted(rng.sample(range(w), 2)), sorted(rng.sample(range(h), 2))
            draw.ellipse((box[0][0], box[1][0], box[0][1], box[1][1]),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        img.save(folder / f"img_{i:05d}.jpg", quality=85)
        if rng.random() < 0.9:
            caption = ", ".join(rng.sample(TAGS, rng.randrange(3, 12)))
            (folder / f"img_{i:05d}.txt").write_text(caption, encoding="utf-8")


def core_opens(folder: Path) -> dict[str, float]:
    from lora_studio.core.dataset.buckets import BucketSettings
    from lora_studio.core.dataset.checks import check_dataset
    from lora_studio.core.dataset.plan import plan_dataset

    out = {}
    for name in ("cold", "warm"):
        tick = time.perf_counter()
        report = check_dataset(folder)
        out[f"check {name}"] = time.perf_counter() - tick
    tick = time.perf_counter()
    plan_dataset(report, settings=BucketSettings(512), check_captions=False)
    out["plan"] = time.perf_counter() - tick
    print(f"  {report.usable} usable, {len(report.skipped)} skipped")
    return out


def gui_open(tab, app, folder: Path) -> dict[str, float]:
    """Open `folder` in the tab; seconds to the report and to the last thumbnail, and the event
    loop's gaps (what a person feels as a frozen window)."""
    from PySide6.QtCore import QElapsedTimer, QTimer

    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    timer.start()
    start = time.perf_counter()
    tab.load_folder(folder)
    report_at = thumbs_at = None
    while time.perf_counter() - start < 600:
        app.processEvents()
        report = tab.report
        if report_at is None and report is not None and not tab.is_scanning:
            report_at = time.perf_counter() - start
        if report_at is not None and tab.model.thumbnails_loaded() >= report.usable:
            thumbs_at = time.perf_counter() - start
            break
        time.sleep(0.001)
    timer.stop()
    gaps.sort()
    return {"report": report_at or float("nan"), "thumbnails": thumbs_at or float("nan"),
            "p50 gap ms": statistics.median(gaps), "p99 gap ms": gaps[int(0.99 * len(gaps))],
            "max gap ms": gaps[-1]}


def gui_opens(folder: Path) -> list[dict[str, float]]:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from lora_studio.ui.tabs.dataset_tab import DatasetTab

    app = QApplication.instance() or QApplication([])
    settings = QSettings(str(Path(tempfile.mkdtemp()) / "s.ini"), QSettings.IniFormat)
    results = []
    for _ in range(2):
        tab = DatasetTab(settings)
        tab.resize(1400, 900)
        tab.show()
        results.append(gui_open(tab, app, folder))
        tab.shutdown()
        tab.deleteLater()
        app.processEvents()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--no-gui", action="store_true")
    args = parser.parse_args()
    os.environ["LORA_STUDIO_HOME"] = tempfile.mkdtemp(prefix="lora-studio-bench-")
    folder = args.dir or Path(tempfile.mkdtemp()) / "photos"
    if args.dir is None:
        tick = time.perf_counter()
        write_photos(folder, args.count)
        print(f"wrote {args.count} photos in {time.perf_counter() - tick:.1f} s to {folder}")
    core = core_opens(folder)
    print("core: " + ", ".join(f"{k} {v:.2f} s" for k, v in core.items())
          + f"; warm / cold = {core['check warm'] / core['check cold']:.3f}")
    if not args.no_gui:
        os.environ["LORA_STUDIO_HOME"] = tempfile.mkdtemp(prefix="lora-studio-bench-")
        first, second = gui_opens(folder)
        for name, row in (("app, first open", first), ("app, second open", second)):
            print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
        print(f"second / first open, report: {second['report'] / first['report']:.3f}; "
              f"thumbnails: {second['thumbnails'] / first['thumbnails']:.3f}")
    if args.dir is None:
        shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
