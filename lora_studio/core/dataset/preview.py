"""What the model sees: the exact pixels and caption training uses for each image.

For an image and an epoch, the sample is the image's first draw in that epoch (its position in
the sample stream fixes the flip, a random crop and the caption's shuffle and dropouts), made by
the same `SampleMaker` the trainer uses; the caption is shown with the part the text encoder does
not read marked. `lora-studio dataset preview` writes these, the Dataset tab shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from lora_studio.core.dataset.buckets import BucketFit
from lora_studio.core.dataset.captions import CaptionWindow, caption_tokenizer, caption_window
from lora_studio.core.dataset.order import DataOrder
from lora_studio.core.dataset.plan import DatasetPlan, plan_from_config
from lora_studio.core.dataset.samples import SampleMaker
from lora_studio.core.fileio import atomic_path, atomic_write_text

CROP_COLOR = (255, 64, 32)


@dataclass
class SeenSample:
    """One image as a training step sees it."""

    image_path: Path
    epoch: int  # counted from 0 (shown from 1)
    position: int  # in the sample stream
    flip: bool
    fit: BucketFit
    crop_box: tuple[int, int, int, int]  # in the resized image (before the mirror)
    pixels: Image.Image  # exactly what is encoded: the bucket-size image
    original: Image.Image  # upright RGB, as decoded
    caption: str  # after prefix / suffix, shuffle, keep tokens, dropouts
    window: CaptionWindow

    @property
    def read_caption(self) -> str:
        """The part of the caption the text encoder reads."""
        cut = self.window.cut_at
        return self.caption if cut is None else self.caption[:cut].rstrip(" ,")

    @property
    def cut_caption(self) -> str:
        """The part it does not read ("" when it reads all)."""
        cut = self.window.cut_at
        return "" if cut is None else self.caption[cut:].strip()

    def original_with_crop(self, width: int = 3) -> Image.Image:
        """The original picture with the crop drawn on it (in the original's pixels)."""
        (ow, oh), (rw, rh) = self.fit.original, self.fit.resized
        left, top, right, bottom = self.crop_box
        sx, sy = ow / rw, oh / rh
        box = (round(left * sx), round(top * sy), round(right * sx) - 1, round(bottom * sy) - 1)
        shown = self.original.copy()
        ImageDraw.Draw(shown).rectangle(box, outline=CROP_COLOR,
                                        width=max(width, round(max(ow, oh) / 200)))
        return shown

    def describe(self) -> str:
        ow, oh = self.fit.original
        bw, bh = self.fit.bucket
        lines = [f"{self.image_path.name}: {ow}x{oh} -> bucket {bw}x{bh}, keeps "
                 f"{self.fit.kept_share:.0%} of the picture"
                 + (", upscaled" if self.fit.upscaled else "")
                 + (", mirrored" if self.flip else "") + f" (epoch {self.epoch + 1})",
                 f"caption: {self.read_caption or '(empty caption)'}"]
        if self.window.cut:
            lines.append(f"not read ({self.window.tokens - self.window.kept} of "
                         f"{self.window.tokens} tokens cut): {shortened(self.cut_caption)}")
        return "\n".join(lines)


def shortened(text: str, limit: int = 300) -> str:
    """`text`, or its first `limit` characters and how many more there are (a 1 MB caption's
    cut part is not a line to print)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()} ... ({len(text) - limit:,} more characters)"


def seen_samples(plan: DatasetPlan, *, seed: int, epoch: int = 0, center_crop: bool = True,
                 random_flip: bool = False, caption_options=None, crop_per_image: bool = True,
                 max_token_length: int = 75,
                 images: Sequence[Path] | None = None) -> list[SeenSample]:
    """The samples of `plan`'s images (or only `images`) in `epoch`, as training draws them."""
    examples = plan.examples()
    order = DataOrder(examples, batch_size=plan.batch_size, seed=seed, random_flip=random_flip)
    maker = SampleMaker(examples, dict(enumerate(plan.fits)), center_crop=center_crop,
                        seed=seed, caption_options=caption_options,
                        crop_per_image=crop_per_image)
    wanted = {Path(p).resolve() for p in images} if images is not None else None
    tokenizer = caption_tokenizer()
    out = []
    for example in examples:
        if wanted is not None and example.image_path.resolve() not in wanted:
            continue
        sample = order.first_sample(example.index, epoch)
        if sample is None:
            continue
        pixels, _ = maker.image(example.index, sample.flip, sample.position)
        caption = maker.caption(example.index, sample.position)
        out.append(SeenSample(example.image_path, epoch, sample.position, sample.flip,
                              plan.fits[example.index],
                              maker.crop_box(example.index, sample.position), pixels,
                              maker.original(example.index), caption,
                              caption_window(tokenizer, caption, max_token_length)))
    return out


def seen_samples_from_config(cfg, *, epoch: int = 0, images: Sequence[Path] | None = None,
                             plan: DatasetPlan | None = None) -> list[SeenSample]:
    """`seen_samples` with a TrainConfig's settings (its dataset checked unless `plan` given)."""
    d, tr = cfg.dataset, cfg.train
    plan = plan or plan_from_config(cfg, check_captions=False)
    return seen_samples(plan, seed=tr.seed, epoch=epoch, center_crop=d.center_crop,
                        random_flip=d.random_flip, caption_options=cfg.caption_options(),
                        crop_per_image=tr.cache_latents, max_token_length=d.max_token_length,
                        images=images)


def write_seen_samples(samples: Sequence[SeenSample], out_dir: str | Path) -> list[Path]:
    """For each sample: `NNN_<stem>.train.png` (the pixels), `NNN_<stem>.crop.png` (the
    original with the crop drawn) and `NNN_<stem>.caption.txt` (what is read, and what is cut;
    NNN keeps images of the same name in two folders apart). Atomic writes."""
    out = Path(out_dir)
    written = []
    for number, sample in enumerate(samples, start=1):
        stem = f"{number:03d}_{sample.image_path.stem}"
        for suffix, image in ((".train.png", sample.pixels),
                              (".crop.png", sample.original_with_crop())):
            path = out / f"{stem}{suffix}"
            with atomic_path(path) as tmp:
                image.save(tmp, format="PNG")
            written.append(path)
        text = sample.read_caption + (f"\n# not read: {sample.cut_caption}\n"
                                      if sample.cut_caption else "\n")
        atomic_write_text(out / f"{stem}.caption.txt", text)
        written.append(out / f"{stem}.caption.txt")
    return written
