"""The dataset doctor: what is worth fixing in a dataset before training on it.

`diagnose(plan)` looks at a planned dataset (`plan.plan_dataset`) and returns findings, each
with a kind, the images it is about (so the Dataset tab can select them) and one line saying
what to do, plus the tag frequency table:

- exact duplicates: the same bytes (sha256), or the same pixels once decoded upright in RGB
  (a re-saved PNG, a JPEG with its metadata stripped); each group is reported once.
- near duplicates: a 64-bit DCT perceptual hash (pHash: 32x32 grayscale, the 8x8 lowest
  frequencies, each bit = above their median), pairs at a Hamming distance of at most
  `NEAR_DUPLICATE_DISTANCE`. Pairs inside an exact group are not reported again: near pairs
  are looked for among one image per exact group.
- images upscaled into their bucket, and images whose aspect ratio is beyond the widest or
  tallest bucket (cropped hard: the finding says how much is kept, `BucketFit.kept_share`).
  With bucketing off every image is cropped to a square, so only those that keep less than
  half (wider than 2:1) are flagged; `bucket_no_upscale` buckets follow each image's own shape.
- missing, empty and too-long captions, and the files the check skipped.

Each image is read once and decoded once, small: JPEGs in draft mode (the decoder scales by
1/2 to 1/8 while decoding), other formats box-reduced right after decoding; the bytes are
hashed from the same read. Only a pair of the same size whose perceptual hashes are within
`EXACT_CANDIDATE_DISTANCE` but whose bytes differ is decoded in full, to compare the pixels.
The images are hashed on a few threads (Pillow and hashlib release the GIL).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lora_studio.core.dataset.buckets import bucket_resolutions
from lora_studio.core.dataset.plan import DatasetPlan
from lora_studio.core.dataset.scan import EMPTY_CAPTION_FILE, NO_CAPTION, tag_frequency
from lora_studio.core.dataset.transforms import decode_rgb, to_rgb, upright

# Hamming distance (of 64 bits) at or under which two images count as near duplicates.
# Measured on tests/data/photos: a copy of chelsea.jpg resized to 2/3, 1/2 or 2x and
# re-saved as JPEG at quality 40-70, or as PNG, or 20 % brighter: distance 0; the same photo
# cropped by 10 %: 10; a 5:1 strip cut from it: 26; the six different photos: 26 to 40
# between any two (the closest pair is coffee / camera_16x9_gray at 26). 8 leaves a margin
# of 8 above the copies and 18 below the closest different pair.
NEAR_DUPLICATE_DISTANCE = 8
HASH_SIDE = 32  # the grayscale image the DCT is taken of
HASH_BITS_SIDE = 8  # the lowest 8 x 8 frequencies make the 64 bits
MIN_SQUARE_KEPT_SHARE = 0.5  # with bucketing off: flag square crops that keep less than this

EXACT_DUPLICATE = "exact duplicate"
NEAR_DUPLICATE = "near duplicate"
UPSCALED = "upscaled"
EXTREME_ASPECT = "extreme aspect ratio"
MISSING_CAPTION = "missing caption"
EMPTY_CAPTION = "empty caption"
LONG_CAPTION = "long caption"
SKIPPED = "skipped"
KINDS = (SKIPPED, EXACT_DUPLICATE, NEAR_DUPLICATE, EXTREME_ASPECT, UPSCALED, MISSING_CAPTION,
         EMPTY_CAPTION, LONG_CAPTION)


@dataclass
class Finding:
    """One thing worth fixing: its kind, the images it is about, what to do."""

    kind: str
    images: tuple[Path, ...]
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "images": [str(p) for p in self.images],
                "message": self.message, "details": self.details}


@dataclass
class DoctorReport:
    plan: DatasetPlan
    findings: list[Finding]
    tags: list[tuple[str, int]]  # most common first
    near_distance: int = NEAR_DUPLICATE_DISTANCE
    hash_seconds: float = 0.0

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.plan.report.root), "images": self.plan.report.usable,
                "near_duplicate_distance": self.near_distance,
                "findings": [f.to_dict() for f in self.findings],
                "tags": [{"tag": t, "count": n} for t, n in self.tags]}


# ------------------------------------------------------------------ hashing
@dataclass(frozen=True)
class Fingerprint:
    path: Path
    file_hash: str  # sha256 of the file's bytes
    size: tuple[int, int]  # as stored (before the EXIF turn)
    phash: int  # 64-bit DCT perceptual hash


def _dct_matrix(n: int = HASH_SIDE, keep: int = HASH_BITS_SIDE) -> np.ndarray:
    """The first `keep` rows of the orthonormal DCT-II matrix of size n."""
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix()
_BIT_WEIGHTS = 1 << np.arange(63, -1, -1, dtype=np.uint64)
EXACT_CANDIDATE_DISTANCE = 4  # identical pixels hash within this, whatever the decode scale


def perceptual_hash(img: Image.Image) -> int:
    """64-bit pHash of an image: 32x32 grayscale -> 2-D DCT -> 8x8 lowest frequencies ->
    1 where a coefficient is above their median."""
    gray = img.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS,
                      reducing_gap=3.0).convert("L")
    coefficients = _DCT @ np.asarray(gray, dtype=np.float64) @ _DCT.T
    bits = (coefficients > np.median(coefficients)).ravel()
    return int((bits.astype(np.uint64) * _BIT_WEIGHTS).sum())


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _pixel_hash(img: Image.Image) -> str:
    digest = hashlib.sha256(f"{img.size}{img.mode}".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "I", "F"})


def fingerprint(path: Path) -> Fingerprint:
    """Read `path` once and decode it once, small (see the module text)."""
    data = path.read_bytes()
    img = Image.open(io.BytesIO(data))
    size = img.size
    if img.format == "JPEG":  # the decoder scales by 1/2, 1/4 or 1/8 as it decodes
        img.draft(img.mode, (HASH_SIDE * 2, HASH_SIDE * 2))
    img.load()
    factor = min(img.size) // (HASH_SIDE * 2)
    if factor >= 2 and img.mode in _REDUCIBLE:  # other formats: box-shrink before converting
        img = img.reduce(factor)  # keeps the EXIF block, so `upright` still turns it
    return Fingerprint(path, hashlib.sha256(data).hexdigest(), size,
                       perceptual_hash(to_rgb(upright(img))))


def _fingerprint_or_why(path: Path) -> Fingerprint | str:
    try:
        return fingerprint(path)
    except Exception as exc:  # changed since the check; any decoder error means the same
        return f"{path.name} could not be read again ({exc}); run `lora-studio dataset check`."


def fingerprints(paths: Sequence[Path], workers: int | None = None) -> list[Fingerprint | str]:
    """The fingerprint of every image, or why it could not be read, hashed on `workers`
    threads (default: a few more than the CPUs, at most 8)."""
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    if workers <= 1 or len(paths) < 8:
        return [_fingerprint_or_why(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_fingerprint_or_why, paths, chunksize=16))


def near_pairs(prints: Sequence[Fingerprint], max_distance: int = NEAR_DUPLICATE_DISTANCE
               ) -> list[tuple[int, int, int]]:
    """(i, j, distance) of every pair of `prints` at most `max_distance` apart, i < j."""
    hashes = np.array([fp.phash for fp in prints], dtype=np.uint64)
    pairs = []
    for i in range(len(prints) - 1):
        distances = np.bitwise_count(hashes[i] ^ hashes[i + 1:])
        pairs += [(i, i + 1 + int(j), int(distances[j]))
                  for j in np.nonzero(distances <= max_distance)[0]]
    return pairs


class _Groups:
    """Union-find over indices: the smallest index of a group is its representative."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = i = self.parent[self.parent[i]]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        self.parent[max(a, b)] = min(a, b)


def _full_pixel_hash(fp: Fingerprint, cache: dict[Path, str]) -> str:
    """sha256 of the image's upright RGB pixels (a full decode, done once per image)."""
    if fp.path not in cache:
        try:
            with Image.open(fp.path) as img:
                cache[fp.path] = _pixel_hash(decode_rgb(img))
        except Exception:  # changed since it was hashed: it matches nothing
            cache[fp.path] = f"unreadable {fp.path}"
    return cache[fp.path]


def duplicates(prints: Sequence[Fingerprint], max_distance: int = NEAR_DUPLICATE_DISTANCE
               ) -> tuple[list[list[Path]], list[tuple[Path, Path, int]]]:
    """(groups of identical images, (a, b, distance) near-duplicate pairs closest first).

    Identical: the same bytes, or the same size and pixels (a pair whose hashes are within
    EXACT_CANDIDATE_DISTANCE is decoded in full to compare). A near pair is listed once
    between the first images of two groups, never inside a group."""
    groups, first_of = _Groups(len(prints)), {}
    for i, fp in enumerate(prints):
        groups.join(first_of.setdefault(fp.file_hash, i), i)
    reps = [i for i, fp in enumerate(prints) if first_of[fp.file_hash] == i]
    pairs = [(reps[a], reps[b], d) for a, b, d in near_pairs(
        [prints[i] for i in reps], max(max_distance, EXACT_CANDIDATE_DISTANCE))]
    cache: dict[Path, str] = {}
    for i, j, d in pairs:
        a, b = prints[i], prints[j]
        if d <= EXACT_CANDIDATE_DISTANCE and a.size == b.size and \
                _full_pixel_hash(a, cache) == _full_pixel_hash(b, cache):
            groups.join(i, j)
    members: dict[int, list[Path]] = {}
    for i, fp in enumerate(prints):
        members.setdefault(groups.find(i), []).append(fp.path)
    near: dict[tuple[int, int], int] = {}
    for i, j, d in pairs:
        key = tuple(sorted((groups.find(i), groups.find(j))))
        if key[0] != key[1] and d <= max_distance:
            near[key] = min(d, near.get(key, d))
    return ([m for m in members.values() if len(m) > 1],
            sorted(((prints[a].path, prints[b].path, d) for (a, b), d in near.items()),
                   key=lambda p: p[2]))


# ------------------------------------------------------------------ findings
def duplicate_findings(prints: Sequence[Fingerprint], max_distance: int) -> list[Finding]:
    groups, pairs = duplicates(prints, max_distance)
    findings = [Finding(EXACT_DUPLICATE, tuple(g),
                        f"{len(g)} identical images ({', '.join(p.name for p in g)}): keep one "
                        "and delete the others (each copy trains it again, like extra repeats).")
                for g in groups]
    for a, b, d in pairs:
        findings.append(Finding(
            NEAR_DUPLICATE, (a, b),
            f"{a.name} and {b.name} look alike (perceptual hash distance {d} of 64, at most "
            f"{max_distance} counts): keep the better one, unless they differ on purpose.",
            {"distance": d}))
    return findings


def _ratio(w: int, h: int) -> str:
    return f"{w / h:.2f}:1" if w >= h else f"1:{h / w:.2f}"


def bucket_findings(plan: DatasetPlan) -> list[Finding]:
    """Images upscaled into their bucket, and images cropped hard by an extreme aspect ratio."""
    findings = []
    for item, fit in plan.upscaled():
        (w, h), (bw, bh) = fit.original, fit.bucket
        findings.append(Finding(
            UPSCALED, (item.image_path,),
            f"{item.image_path.name} is {w}x{h}, enlarged to cover its {bw}x{bh} bucket: it "
            "trains softer than the rest; use a larger original, or set "
            "dataset.bucket_no_upscale.", {"size": [w, h], "bucket": [bw, bh]}))
    s = plan.settings
    if s.enabled and s.no_upscale:
        return findings
    table = bucket_resolutions(s)
    widest = max(table, key=lambda b: b[0] / b[1])
    tallest = min(table, key=lambda b: b[0] / b[1])
    for item, fit in zip(plan.report.items, plan.fits):
        (w, h), ratio = fit.original, fit.original[0] / fit.original[1]
        if s.enabled:
            edge = widest if ratio > widest[0] / widest[1] else \
                tallest if ratio < tallest[0] / tallest[1] else None
            if edge is None:
                continue
            side = "wider than the widest" if edge is widest else "taller than the tallest"
            why = f"{side} bucket {edge[0]}x{edge[1]} ({_ratio(*edge)})"
            fix = "crop it yourself to choose what stays"
        elif fit.kept_share < MIN_SQUARE_KEPT_SHARE:
            why, fix = "cropped to a square (bucketing is off)", \
                "crop it yourself, or turn on dataset.enable_bucket"
        else:
            continue
        findings.append(Finding(
            EXTREME_ASPECT, (item.image_path,),
            f"{item.image_path.name} is {w}x{h} ({_ratio(w, h)}), {why}: training keeps "
            f"{fit.kept_share:.0%} of it; {fix}.",
            {"size": [w, h], "bucket": list(fit.bucket), "kept_share": fit.kept_share}))
    return findings


def caption_findings(plan: DatasetPlan) -> list[Finding]:
    """Images without a caption file, with an empty one, or with one cut at the token window."""
    findings = []
    for item in plan.report.items:
        name = item.image_path.name
        if item.caption_source == EMPTY_CAPTION_FILE:
            findings.append(Finding(
                EMPTY_CAPTION, (item.image_path,),
                f"{name}: its caption file {item.caption_path.name} is empty, so it trains "
                "with an empty caption; write a caption, or delete the file to use the "
                "default caption."))
        elif item.caption_path is None:
            trains = "an empty caption" if item.caption_source == NO_CAPTION else \
                f'the {item.caption_source} "{item.caption}"'
            findings.append(Finding(
                MISSING_CAPTION, (item.image_path,),
                f"{name} has no caption file and trains with {trains}; write "
                f"{item.image_path.stem}{_extension(plan, item.subset)} beside it to caption "
                "it.", {"caption_source": item.caption_source}))
    for cut in plan.long_captions:
        findings.append(Finding(
            LONG_CAPTION, (cut.item.image_path,),
            f"{cut.item.image_path.name}: its caption is {cut.tokens} tokens and the text "
            f"encoder reads {cut.kept}, so it is cut from \"{cut.first_dropped_tag}\" on; "
            "shorten it, or set dataset.max_token_length to 150 or 225.",
            {"tokens": cut.tokens, "kept": cut.kept}))
    return findings


def _extension(plan: DatasetPlan, subset: int) -> str:
    subsets = plan.report.subsets
    return subsets[subset].caption_extension if subset < len(subsets) else ".txt"


def tag_table(captions: Iterable[str]) -> list[tuple[str, int]]:
    """(tag, images) most common first, then by name (tags as `tag_frequency` counts them)."""
    return sorted(tag_frequency(captions).items(), key=lambda t: (-t[1], t[0]))


def diagnose(plan: DatasetPlan, *, max_distance: int = NEAR_DUPLICATE_DISTANCE,
             workers: int | None = None) -> DoctorReport:
    """Every finding about `plan`'s dataset (see the module text), in `KINDS` order."""
    report = plan.report
    start = time.perf_counter()
    hashed = fingerprints([item.image_path for item in report.items], workers)
    seconds = time.perf_counter() - start
    findings = [Finding(SKIPPED, (s.path,), f"{s.path.name} is not trained: {s.reason}")
                for s in report.skipped]
    findings += [Finding(SKIPPED, (item.image_path,), why)
                 for item, why in zip(report.items, hashed) if isinstance(why, str)]
    prints = [fp for fp in hashed if isinstance(fp, Fingerprint)]
    findings += duplicate_findings(prints, max_distance)
    findings += bucket_findings(plan) + caption_findings(plan)
    findings.sort(key=lambda f: KINDS.index(f.kind))  # stable: dataset order within a kind
    return DoctorReport(plan, findings, tag_table(i.caption for i in report.items),
                        max_distance, seconds)


def doctor_from_config(cfg, *, max_distance: int = NEAR_DUPLICATE_DISTANCE) -> DoctorReport:
    """`diagnose` the dataset of a TrainConfig with its settings."""
    from lora_studio.core.dataset.plan import plan_from_config

    return diagnose(plan_from_config(cfg), max_distance=max_distance)


def format_doctor(report: DoctorReport, top_tags: int = 20) -> str:
    """The findings grouped by kind, and the most common tags, as text for a person."""
    plan = report.plan
    lines = [f"Dataset doctor: {plan.report.root} ({plan.report.usable} images, hashed in "
             f"{report.hash_seconds:.1f} s)"]
    for kind in KINDS:
        found = report.of(kind)
        if found:
            lines.append(f"{kind.capitalize()} ({len(found)}):")
            lines += [f"  {f.message}" for f in found]
    if not report.findings:
        lines.append("Nothing to fix: no duplicates, hard crops, upscaled images or caption "
                     "problems.")
    if report.tags:
        shown = report.tags[:top_tags]
        more = f" (top {len(shown)} of {len(report.tags)})" if len(report.tags) > top_tags \
            else ""
        lines.append(f"Tags, in how many images{more}:")
        width = max(len(tag) for tag, _ in shown)
        lines += [f"  {tag:<{width}}  {count}" for tag, count in shown]
    return "\n".join(lines)
