"""The Tiny Shapes world: one plain shape on a plain background, 64x64, and its caption.

    scene = Scene("circle", "red", "large", "white", x=0.4, y=0.6)
    image = draw(scene)                 # PIL RGB 64x64
    scene.caption()                     # "a large red circle on a white background"

Everything is deterministic for a seed (`random_scenes(n, seed)`). The base model learns the
`SHAPES`; `CONCEPT_SHAPES` (a star) and the `striped` texture exist only for LoRA datasets, so
the base model has never seen them. Shapes are drawn 4x larger and downsampled (smooth edges).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

SIDE = 64
SHAPES = ("circle", "square", "triangle")
CONCEPT_SHAPES = ("star",)
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
          "yellow": (235, 200, 30), "purple": (140, 50, 190)}
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "gray": (128, 128, 128)}
SIZES = ("small", "large")
TEXTURES = ("plain", "striped")
# half the extent of a shape, in pixels of the 64x64 image
RADIUS = {"small": (11.0, 14.0), "large": (21.0, 26.0)}
_SUPERSAMPLE = 4
_STRIPE_SHADE = 0.6  # stripes: the color, then the color darkened to this share


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    size: str
    background: str
    x: float = 0.5  # centre, as a share of the free room (0 = left / top, 1 = right / bottom)
    y: float = 0.5
    radius_t: float = 0.5  # where in the size's radius range
    rotation: float = 0.0  # stars only, in turns of one point (0..1)
    texture: str = "plain"

    def caption(self, trigger: str = "") -> str:
        """"a large red circle on a white background" (texture and trigger when given)."""
        texture = "striped " if self.texture == "striped" else ""
        text = f"a {self.size} {self.color} {texture}{self.shape} on a {self.background} " \
               "background"
        return f"{trigger}, {text}" if trigger else text


def base_scenes() -> list[Scene]:
    """Every shape x color x size x background the base model is asked to draw (90)."""
    return [Scene(s, c, z, b) for c in COLORS for s in SHAPES for z in SIZES for b in BACKGROUNDS]


def random_scene(rng: random.Random, shapes=SHAPES, texture: str = "plain") -> Scene:
    return Scene(rng.choice(list(shapes)), rng.choice(list(COLORS)), rng.choice(SIZES),
                 rng.choice(list(BACKGROUNDS)), rng.random(), rng.random(), rng.random(),
                 rng.random(), texture)


def random_scenes(n: int, seed: int, shapes=SHAPES, texture: str = "plain") -> list[Scene]:
    rng = random.Random(seed)
    return [random_scene(rng, shapes, texture) for _ in range(n)]


def radius_of(scene: Scene) -> float:
    low, high = RADIUS[scene.size]
    return low + (high - low) * scene.radius_t


def centre_of(scene: Scene) -> tuple[float, float]:
    r = radius_of(scene)
    margin = r + 2.0
    room = SIDE - 2 * margin
    return margin + room * scene.x, margin + room * scene.y


def outline(scene: Scene, scale: float = 1.0) -> list[tuple[float, float]] | None:
    """The polygon of the shape (None for a circle), in pixels times `scale`."""
    cx, cy = (v * scale for v in centre_of(scene))
    r = radius_of(scene) * scale
    if scene.shape == "square":
        h = r * 0.85  # a square of the same visual weight as the circle
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if scene.shape == "triangle":
        return [(cx, cy - r), (cx + r * math.sqrt(3) / 2, cy + r / 2),
                (cx - r * math.sqrt(3) / 2, cy + r / 2)]
    if scene.shape == "star":
        turn = scene.rotation * 2 * math.pi / 5
        return [(cx + (r if k % 2 == 0 else r * 0.42) * math.cos(turn + k * math.pi / 5
                                                                  - math.pi / 2),
                 cy + (r if k % 2 == 0 else r * 0.42) * math.sin(turn + k * math.pi / 5
                                                                  - math.pi / 2))
                for k in range(10)]
    if scene.shape == "circle":
        return None
    raise ValueError(f"unknown shape {scene.shape!r}")


def draw(scene: Scene):
    """The scene as a 64x64 RGB PIL image."""
    from PIL import Image, ImageDraw

    big = SIDE * _SUPERSAMPLE
    color = COLORS[scene.color]
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    mask = Image.new("L", (big, big), 0)
    pen = ImageDraw.Draw(mask)
    points = outline(scene, _SUPERSAMPLE)
    if points is None:
        cx, cy = (v * _SUPERSAMPLE for v in centre_of(scene))
        r = radius_of(scene) * _SUPERSAMPLE
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        pen.polygon(points, fill=255)
    image.paste(_fill(scene, color, big), (0, 0), mask)
    return image.resize((SIDE, SIDE), Image.LANCZOS)


def _fill(scene: Scene, color: tuple[int, int, int], big: int):
    from PIL import Image, ImageDraw

    fill = Image.new("RGB", (big, big), color)
    if scene.texture == "striped":
        dark = tuple(int(c * _STRIPE_SHADE) for c in color)
        pen = ImageDraw.Draw(fill)
        period = 8 * _SUPERSAMPLE  # diagonal stripes, 4 px dark in every 8
        for offset in range(-big, big, period):
            pen.polygon([(offset, 0), (offset + period / 2, 0),
                         (offset + period / 2 + big, big), (offset + big, big)], fill=dark)
    return fill


def with_texture(scene: Scene, texture: str) -> Scene:
    return replace(scene, texture=texture)
