"""A real (tiny) training run folder for the checkpoint-grid tests: 4 steps, a LoRA file at
step 2, checkpoints at steps 1, 2 and 3, the final LoRA at step 4, alpha != rank."""

from __future__ import annotations

import random
from pathlib import Path

PROMPTS = ["zqstar, red", "zqstar, blue"]


def make_dataset(folder: Path, count: int = 4) -> Path:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(count):
        img = Image.new("RGB", (32, 32), (245, 245, 240))
        x, y = rng.randint(2, 12), rng.randint(2, 12)
        ImageDraw.Draw(img).rectangle([x, y, x + 16, y + 16], fill=(200, 40 * i, 60))
        img.save(folder / f"img_{i}.png")
        (folder / f"img_{i}.txt").write_text(PROMPTS[i % 2])
    return folder


def make_training_run(model_dir: Path, root: Path, name: str = "t") -> Path:
    """Train the run into `root / "run"` and return that folder."""
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.train.config import config_from_dict
    from lora_studio.core.train.trainer import run_training_job

    cfg = config_from_dict({
        "model": {"base": str(model_dir)},
        "dataset": {"path": str(make_dataset(root / "data")), "resolution": 32,
                    "default_caption": "zqstar"},
        "lora": {"rank": 4, "alpha": 2.0, "train_text_encoder": True},
        "train": {"steps": 4, "learning_rate": 5e-2, "seed": 3},
        "sample": {"prompts": PROMPTS, "seed": 7, "steps": 2, "cfg": 5.0},
        "checkpoint": {"every": 1},
        "output": {"path": str(root / "run"), "name": name, "save_every": 2,
                   "save_precision": "fp32"},
    })
    run_training_job(cfg, lambda event: None, JobControl())
    return root / "run"
