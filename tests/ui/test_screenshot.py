"""`lora-studio screenshot` saves one non-blank PNG per tab."""

from __future__ import annotations

from PIL import Image

from lora_studio.cli import main


def test_screenshot_command_grabs_every_tab(tmp_path, dataset_dir, qapp, capsys):
    out = tmp_path / "shots"
    assert main(["screenshot", "--out", str(out), "--dataset", str(dataset_dir)]) == 0
    paths = [out / name for name in ("dataset.png", "train.png", "mix.png", "generate.png")]
    assert capsys.readouterr().out.split() == [str(p) for p in paths]
    for path in paths:
        with Image.open(path) as image:
            assert image.size[0] >= 1000
            low, high = image.convert("L").getextrema()
            assert high - low > 50  # something is drawn, not a blank area
