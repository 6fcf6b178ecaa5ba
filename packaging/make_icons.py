"""Draw LoRA Studio's icon: resources/icons/lora-studio.svg and the PNGs at 48, 128 and 256 px.

Three stacked layers (a LoRA on a base model) with an "L" on the front one, in the colours of
resources/style/studio.qss. The SVG and the PNGs come from the same shapes below; the PNGs are
drawn 4x larger with Pillow and scaled down, so their edges are smooth. Run it again after a
change and commit the files:

    python packaging/make_icons.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "resources" / "icons"
SIZES = (48, 128, 256)
BOX = 256  # the SVG's view box; shapes below are in these units

# (x0, y0, x1, y1, corner radius, fill) drawn in order, back to front.
GAP = 6  # the background colour around each layer, so overlapping layers stay apart
SHAPES: list[tuple[float, float, float, float, float, str]] = [
    (8, 8, 248, 248, 52, "#33373d"),      # border
    (12, 12, 244, 244, 48, "#1e2023"),    # background (QMainWindow)
]
for (x, y), fill in zip(((40, 40), (68, 68), (96, 96)), ("#34405a", "#3b6fd8", "#4c8dff")):
    SHAPES.append((x - GAP, y - GAP, x + 120 + GAP, y + 120 + GAP, 16 + GAP, "#1e2023"))
    SHAPES.append((x, y, x + 120, y + 120, 16, fill))
LETTER = [(124, 118), (146, 118), (146, 172), (192, 172), (192, 194), (124, 194)]
LETTER_FILL = "#ffffff"


def svg_text() -> str:
    rects = "\n".join(
        f'  <rect x="{x0:g}" y="{y0:g}" width="{x1 - x0:g}" height="{y1 - y0:g}" rx="{r:g}" '
        f'fill="{fill}"/>' for x0, y0, x1, y1, r, fill in SHAPES)
    points = " ".join(f"{x:g},{y:g}" for x, y in LETTER)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{BOX}" height="{BOX}" '
            f'viewBox="0 0 {BOX} {BOX}">\n  <title>LoRA Studio</title>\n{rects}\n'
            f'  <polygon points="{points}" fill="{LETTER_FILL}"/>\n</svg>\n')


def draw(size: int) -> Image.Image:
    scale = 4 * size / BOX
    image = Image.new("RGBA", (4 * size, 4 * size), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    for x0, y0, x1, y1, r, fill in SHAPES:
        pen.rounded_rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1],
                              radius=r * scale, fill=fill)
    pen.polygon([(x * scale, y * scale) for x, y in LETTER], fill=LETTER_FILL)
    return image.resize((size, size), Image.LANCZOS)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lora-studio.svg").write_text(svg_text(), encoding="utf-8")
    for size in SIZES:
        draw(size).save(OUT / f"lora-studio-{size}.png", optimize=True)
    print(f"Icons written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
