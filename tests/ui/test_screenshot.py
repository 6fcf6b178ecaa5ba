"""The docs screenshot helper saves one non-blank PNG per tab."""

from __future__ import annotations

from PIL import Image

from lora_studio.ui.screenshot import take_screenshots


def test_screenshots_of_every_tab(tmp_path, dataset_dir, qapp):
    paths = take_screenshots(tmp_path / "shots", dataset_dir)
    assert [p.name for p in paths] == ["dataset.png", "train.png", "mix.png", "generate.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.size[0] >= 1000
            low, high = image.convert("L").getextrema()
            assert high - low > 50  # something is drawn, not a blank area
