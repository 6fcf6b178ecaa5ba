"""Draw the shipped sample dataset: 12 stars of varied color, size, position and background."""
# Run from the repository root: python resources/scripts/draw_sample_stars.py
import math, random
from pathlib import Path
from PIL import Image, ImageDraw
out = Path("resources/sample_dataset")
colors = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (235, 200, 30),
          "purple": (140, 50, 190), "orange": (240, 130, 20)}
backgrounds = {"white": (250, 250, 250), "black": (15, 15, 15), "gray": (128, 128, 128)}
rng = random.Random(7)
combos = [(c, b) for c in colors for b in backgrounds]
rng.shuffle(combos)
for i, (cname, bname) in enumerate(combos[:12]):
    if cname == "yellow" and bname == "white":
        bname = "black"
    size = "large" if i % 2 == 0 else "small"
    scale = 4  # draw big, downsample: smooth edges
    W = 64 * scale
    img = Image.new("RGB", (W, W), backgrounds[bname])
    d = ImageDraw.Draw(img)
    r = (rng.uniform(22, 27) if size == "large" else rng.uniform(12, 15)) * scale
    cx = rng.uniform(r + 2 * scale, W - r - 2 * scale); cy = rng.uniform(r + 2 * scale, W - r - 2 * scale)
    rot = rng.uniform(0, 2 * math.pi / 5)
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.42
        a = rot + k * math.pi / 5 - math.pi / 2
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    d.polygon(pts, fill=colors[cname])
    img = img.resize((64, 64), Image.LANCZOS)
    name = f"star_{i:02d}"
    img.save(out / f"{name}.png")
    (out / f"{name}.txt").write_text(f"zqstar, a {size} {cname} star on a {bname} background\n")
print("ok")
