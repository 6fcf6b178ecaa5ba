"""What a Tiny Shapes picture shows: background, main shape, its color, size and texture.

Plain image measurements, no learned model, so a score means the same thing every time:
- background: the world background nearest to the median of the border pixels, if it is
  near ("other" when none is: a dark teal is not black, whichever is nearest);
- the shape: the largest connected region of pixels far from that background;
- color: the world color nearest to the median of the region's brighter half (stripes are the
  color and a darker shade of it);
- size: the bounding box side of the region (small shapes span 19-29 px, large ones 36-53);
- shape: a star has five tips: peaks of the outline's distance from the centroid, counted
  after merging away wiggles smaller than an eighth of the radius (a circle has none, a
  square four, a triangle three), and is not convex (solidity = area / convex hull area
  below 0.9; a drawn star is ~0.55, generated stars with rounded tips 0.6-0.85). Otherwise
  how much of the four corners of its bounding box the shape fills (a square, even one drawn
  with pinched sides, fills them; a circle leaves them empty; a triangle fills only the
  bottom two);
- texture: striped when the region's brightness varies strongly inside it.
Nothing found (an empty or noisy picture) reads as shape "none".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from lora_studio.core.models.tiny_shapes import world

_FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that counts as the shape
# RGB distance within which a border reads as a world background. The base model's drift from
# its backgrounds: 38 at most over its 180 test pictures; a star LoRA's 24.
_BACKGROUND_TOLERANCE = 45.0
_MIN_AREA = 40  # pixels: less is noise, not a shape
_SIZE_SPLIT = 33.0  # bounding box side in pixels between small and large
_STAR_TIPS = 5
_STAR_MAX_SOLIDITY = 0.9  # five bumps on a convex blob are not a star
_TIP_PROMINENCE = 0.12  # of the largest radius: smaller wiggles of the outline are not tips
_PROFILE_BINS = 72  # directions (5 degrees each) of the outline's radius profile
_SQUARE_CORNERS = 0.55  # the four corners of the bounding box: a square fills them (> 0.7)
_TRIANGLE_CORNERS = 0.3  # bottom corners minus top corners: a triangle's base fills the bottom
_STRIPE_CONTRAST = 0.13  # std / mean of the brightness inside the shape above this: striped


@dataclass(frozen=True)
class Reading:
    shape: str  # circle | square | triangle | star | none
    color: str | None
    size: str | None
    background: str
    texture: str | None
    area: int = 0

    def matches(self, scene: world.Scene, *, texture: bool = False) -> dict[str, bool]:
        """Which attributes of `scene` the picture shows ("all" = every one of them)."""
        got = {"shape": self.shape == scene.shape, "color": self.color == scene.color,
               "size": self.size == scene.size, "background": self.background == scene.background}
        if texture:
            got["texture"] = self.texture == scene.texture
        got["all"] = all(got.values())
        return got


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    colors = np.array([palette[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((colors - rgb) ** 2).sum(axis=1)))]


def _flood(mask: np.ndarray, seeds, seen: np.ndarray) -> list[tuple[int, int]]:
    """The pixels of `mask` 4-connected to `seeds` and not yet `seen` (marked seen now); a small
    image, so a plain BFS is enough."""
    height, width = mask.shape
    queue = deque((y, x) for y, x in seeds if mask[y, x] and not seen[y, x])
    for y, x in queue:
        seen[y, x] = True
    region = []
    while queue:
        y, x = queue.popleft()
        region.append((y, x))
        for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                seen[ny, nx] = True
                queue.append((ny, nx))
    return region


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected True region of `mask`."""
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    for sy, sx in zip(*np.nonzero(mask)):
        region = _flood(mask, [(sy, sx)], seen)
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def _fill_holes(region: np.ndarray) -> np.ndarray:
    """The region with its holes filled (what the background reaches from the border stays)."""
    height, width = region.shape
    border = [(y, x) for y in range(height) for x in (0, width - 1)]
    border += [(y, x) for x in range(width) for y in (0, height - 1)]
    outside = np.zeros_like(region, dtype=bool)
    _flood(~region, border, outside)
    return ~outside


def _hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of pixel squares (corner points), by the monotone chain."""
    corners = np.concatenate([points + d for d in ((0, 0), (0, 1), (1, 0), (1, 1))])
    pts = sorted(set(map(tuple, corners.tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    xs, ys = np.array([p[0] for p in hull], float), np.array([p[1] for p in hull], float)
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def read_picture(image) -> Reading:
    """What the picture (PIL image or HxWx3 uint8 array) shows."""
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image,
                     dtype=np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = _nearest(background_rgb, world.BACKGROUNDS)
    if np.linalg.norm(np.array(world.BACKGROUNDS[background]) - background_rgb) > \
            _BACKGROUND_TOLERANCE:
        background = "other"
    distance = np.sqrt(((rgb - background_rgb) ** 2).sum(axis=2))
    region = _largest_region(distance > _FOREGROUND_DISTANCE)
    area = int(region.sum())
    if area < _MIN_AREA:
        return Reading("none", None, None, background, None, area)
    solid = _fill_holes(region)
    ys, xs = np.nonzero(solid)
    side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    solidity = solid.sum() / max(_hull_area(np.stack([ys, xs], axis=1)), 1.0)
    top, bottom = _corner_fill(solid, ys, xs)
    if solidity < _STAR_MAX_SOLIDITY and count_tips(solid) == _STAR_TIPS:
        shape = "star"
    elif (top + bottom) / 2 >= _SQUARE_CORNERS:
        shape = "square"
    elif bottom - top >= _TRIANGLE_CORNERS:
        shape = "triangle"
    else:
        shape = "circle"
    pixels = rgb[region]
    brightness = pixels.mean(axis=1)
    bright = pixels[brightness >= np.median(brightness)]
    color = _nearest(np.median(bright, axis=0), world.COLORS)
    inner = _erode(region)
    values = rgb[inner].max(axis=1) if inner.sum() >= _MIN_AREA // 2 else rgb[region].max(axis=1)
    contrast = float(values.std() / max(values.mean(), 1.0))
    texture = "striped" if contrast > _STRIPE_CONTRAST else "plain"
    return Reading(shape, color, "large" if side >= _SIZE_SPLIT else "small", background,
                   texture, area)


def radius_profile(solid: np.ndarray, bins: int = _PROFILE_BINS) -> np.ndarray:
    """The outline's largest distance from the centroid in each of `bins` directions, gaps
    interpolated and lightly smoothed (pixel steps are not tips)."""
    ys, xs = np.nonzero(solid)
    cy, cx = ys.mean(), xs.mean()
    by, bx = np.nonzero(solid & ~_erode(solid))
    angle = np.arctan2(by - cy, bx - cx)
    distance = np.hypot(by - cy, bx - cx) + 0.5  # to the pixel's outer edge, roughly
    index = ((angle + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    profile = np.full(bins, np.nan)
    np.fmax.at(profile, index, distance)
    known = ~np.isnan(profile)
    steps = np.arange(bins)
    profile = np.interp(steps, steps[known], profile[known], period=bins)
    wrapped = np.concatenate([profile[-1:], profile, profile[:1]])
    return np.convolve(wrapped, np.array([1.0, 2.0, 1.0]) / 4, "valid")


def count_tips(solid: np.ndarray) -> int:
    """Peaks of the radius profile that rise above their neighbouring dips by more than
    `_TIP_PROMINENCE` of the largest radius (at least 1.5 px)."""
    profile = radius_profile(solid)
    extrema = _alternating_extrema(profile)
    threshold = max(1.5, _TIP_PROMINENCE * float(profile.max()))
    # merge away the flattest max/min pair until every rise and fall is a real one
    while len(extrema) >= 4:
        rises = [abs(extrema[i][0] - extrema[(i + 1) % len(extrema)][0])
                 for i in range(len(extrema))]
        i = int(np.argmin(rises))
        if rises[i] >= threshold:
            break
        for j in sorted((i, (i + 1) % len(extrema)), reverse=True):
            extrema.pop(j)
    if len(extrema) < 4:
        return 0  # at most one bump: round
    return sum(is_max for _, is_max in extrema)


def _alternating_extrema(profile: np.ndarray) -> list[tuple[float, bool]]:
    """The circular profile's local maxima and minima as (value, is_max), alternating."""
    n = len(profile)
    out: list[tuple[float, bool]] = []
    for i in range(n):
        before, here, after = profile[i - 1], profile[i], profile[(i + 1) % n]
        if here > before and here >= after:
            kind = True
        elif here < before and here <= after:
            kind = False
        else:
            continue
        if out and out[-1][1] == kind:  # two maxima in a row: keep the higher (minima: lower)
            if (here > out[-1][0]) == kind:
                out[-1] = (here, kind)
        else:
            out.append((here, kind))
    if len(out) > 1 and out[0][1] == out[-1][1]:  # the circle closes on a repeat
        last = out.pop()
        if (last[0] > out[0][0]) == last[1]:
            out[0] = last
    return out


def _corner_fill(solid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[float, float]:
    """How much of the top two and the bottom two corner patches (a fifth of the side) of the
    bounding box the shape fills."""
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    k = max(2, round(0.2 * min(y1 - y0, x1 - x0)))
    top = (solid[y0:y0 + k, x0:x0 + k].mean() + solid[y0:y0 + k, x1 - k:x1].mean()) / 2
    bottom = (solid[y1 - k:y1, x0:x0 + k].mean() + solid[y1 - k:y1, x1 - k:x1].mean()) / 2
    return float(top), float(bottom)


def _erode(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """The mask without its edge pixels (edges blend with the background, not a texture)."""
    out = mask.copy()
    for _ in range(steps):
        shrunk = out.copy()
        shrunk[1:] &= out[:-1]
        shrunk[:-1] &= out[1:]
        shrunk[:, 1:] &= out[:, :-1]
        shrunk[:, :-1] &= out[:, 1:]
        out = shrunk
    return out
