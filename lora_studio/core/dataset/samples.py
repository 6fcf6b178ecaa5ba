"""The pixels and caption of one training sample: the one code path training and
"what the model sees" share, so the preview shows exactly what a step trains on.

A sample is an image at its bucket (resize to cover, crop, maybe mirror) and its caption after
kohya's caption options, each drawn from the sample's position in the sample stream (and the
run's seed), so the same sample looks the same in every run and after a resume. No torch here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from PIL import Image

from lora_studio.core.dataset.buckets import BucketFit, prepare_for_bucket
from lora_studio.core.dataset.captions import CaptionOptions, process_caption
from lora_studio.core.dataset.order import Example
from lora_studio.core.dataset.transforms import load_image_rgb


class SampleMaker:
    """Turns (dataset index, flip, position) into the image and caption a step trains on."""

    def __init__(self, examples: Sequence[Example], fits: dict[int, BucketFit], *,
                 center_crop: bool, seed: int, caption_options: CaptionOptions | None = None,
                 crop_per_image: bool = True):
        self.examples = examples
        self.fits = fits
        self.center_crop = center_crop
        self.seed = seed
        self.caption_options = caption_options or CaptionOptions()
        # With cached latents a random crop is drawn once per image (the cache holds one).
        self.crop_per_image = crop_per_image
        self._images: dict[int, Image.Image] = {}

    def original(self, index: int) -> Image.Image:
        """The image upright in RGB, as decoded once (kept until `forget_images`)."""
        if index not in self._images:
            self._images[index] = load_image_rgb(self.examples[index].image_path)
        return self._images[index]

    def forget_images(self) -> None:
        self._images.clear()

    def crop_rng(self, index: int, position: int | None) -> random.Random | None:
        """None for a centre crop; else the random crop's generator, per image or per sample."""
        if self.center_crop:
            return None
        tag = "image" if position is None or self.crop_per_image else position
        return random.Random(f"crop:{self.seed}:{index}:{tag}")

    def image(self, index: int, flip: bool,
              position: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
        """The bucket-size image a sample trains on, and its crop's (top, left) in the resized
        image."""
        return prepare_for_bucket(self.original(index), self.fits[index],
                                  crop_rng=self.crop_rng(index, position), flip=flip)

    def crop_box(self, index: int, position: int | None = None) -> tuple[int, int, int, int]:
        """The crop (left, top, right, bottom) in the resized image, as `image` draws it."""
        return self.fits[index].crop_box(self.crop_rng(index, position))

    def caption(self, index: int, position: int | None = None) -> str:
        """The caption a sample trains with: kohya's prefix / suffix, shuffle, keep tokens and
        dropouts, drawn from the sample's position."""
        rng = random.Random(f"caption:{self.seed}:{position}")
        return process_caption(self.examples[index].caption, self.caption_options, rng)
