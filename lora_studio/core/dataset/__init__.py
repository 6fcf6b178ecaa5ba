"""Datasets: scanning a folder, checking every image, and turning images into training tensors.

`check_dataset` is the entry point: it returns a `DatasetReport` of usable images (with
captions), skipped files with reasons, and images missing a caption. torch is not imported
here (only `image_to_tensor` needs it, and imports it when called).
"""

from __future__ import annotations

from lora_studio.core.dataset.checks import check_dataset, check_image, format_report
from lora_studio.core.dataset.scan import (
    IMAGE_EXTENSIONS,
    DatasetItem,
    DatasetReport,
    SkippedFile,
    read_caption,
    tag_frequency,
)
from lora_studio.core.dataset.transforms import image_to_tensor, load_image_rgb, prepare_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetItem",
    "DatasetReport",
    "SkippedFile",
    "check_dataset",
    "check_image",
    "format_report",
    "image_to_tensor",
    "load_image_rgb",
    "prepare_image",
    "read_caption",
    "tag_frequency",
]
