"""Proof that training learns, on a tiny SDXL model and a tiny SD 2.x v-prediction model.

Two measures, each against the base model:
* a fixed-noise, fixed-timestep loss on the training image (the same noise and timesteps for
  every LoRA compared, so the values compare), which must fall clearly over the run;
* the image the LoRA renders for the training caption with the same seed, which must be
  measurably closer to the training image than the base model's.

The tiny models have random UNets, so from pure noise both the base and any LoRA on it draw
noise (measured: mean distance to the training image 108 for the base, 103 after 400 steps); the
image check therefore starts from the training image noised to 60 % (img2img, strength 0.6, the
same sampler and seed), where a model that learned the picture visibly restores it and the base
visibly destroys it. Their random VAEs encode to latents ~30x smaller than the noise, so the
Tiny Shapes VAE (trained on 64 px shapes) is put in both: a training image is then something
the UNet can see.

Measured (80 steps, rank 16, lr 1e-2, 2 CPU cores): SDXL fixed loss 1.184 -> 0.385 (step 40)
-> 0.309, img2img distance 57.0 -> 40.4; SD 2.x v 1.406 -> 0.846 -> 0.788, distance 74.7 -> 50.5.
The margins asserted: the loss below 0.8x the base's halfway and 0.7x at the end, the distance
below 0.8x the base's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from models_fixtures import tiny_models  # noqa: F401 (the session's tiny models)
from PIL import Image

from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.paths import sample_dataset_dir
from lora_studio.core.train.config import config_from_dict
from lora_studio.core.train.objective import step_loss
from lora_studio.core.train.trainer import run_training_job

CAPTION = "zqstar"
STEPS = 80
TIMESTEPS = [50, 200, 400, 600, 800, 950]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("learn") / "star"
    folder.mkdir()
    shutil.copy(sample_dataset_dir() / "star_00.png", folder / "star.png")
    (folder / "star.txt").write_text(CAPTION)
    return folder


def with_tiny_shapes_vae(model: Path, out: Path) -> Path:
    from lora_studio.core.models.tiny import shipped_tiny_shapes_dir

    shutil.copytree(model, out)
    shutil.rmtree(out / "vae")
    shutil.copytree(shipped_tiny_shapes_dir() / "vae", out / "vae")
    return out


def train(model: Path, data: Path, out: Path):
    cfg = config_from_dict({
        "model": {"base": str(model)},
        "dataset": {"path": str(data), "resolution": 64},
        "lora": {"rank": 16, "alpha": 16.0, "targets": "attention+mlp+conv"},
        "train": {"steps": STEPS, "batch_size": 4, "learning_rate": 1e-2, "seed": 1},
        "output": {"path": str(out), "name": "l", "save_every": STEPS // 2,
                   "save_precision": "fp32"}})
    events: list = []
    run_training_job(cfg, events.append, JobControl())
    assert isinstance(events[-1], ev.Finished), events[-1]
    return cfg


class Judge:
    """The base model with LoRAs swapped in and out, and the two measures."""

    def __init__(self, model: Path, data: Path):
        from diffusers import AutoPipelineForImage2Image

        from lora_studio.core.dataset.transforms import image_to_tensor
        from lora_studio.core.generate.samplers import make_scheduler
        from lora_studio.core.train.data import latent_distribution
        from lora_studio.core.train.families import SampleGeometry, load_family

        self.family = family = load_family(model)
        self.pipe = family.preview_pipeline(make_scheduler(family.scheduler_config, "Euler"),
                                            lambda m: m)
        self.img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
        self.img2img.set_progress_bar_config(disable=True)
        self.image = Image.open(next(data.glob("*.png"))).convert("RGB")
        with torch.no_grad():
            mean, _ = latent_distribution(family.vae, image_to_tensor(self.image).unsqueeze(0))
        latents = (mean * family.vae.config.scaling_factor).repeat(len(TIMESTEPS), 1, 1, 1)
        self.batch = (latents, torch.randn(latents.shape, generator=torch.Generator()
                                           .manual_seed(0)), torch.tensor(TIMESTEPS))
        self.geometry = [SampleGeometry((64, 64), (0, 0), (64, 64))] * len(TIMESTEPS)

    @torch.no_grad()
    def fixed_loss(self, tr) -> float:
        objective = self.family.objective(tr)
        cond = self.family.encode([CAPTION] * len(TIMESTEPS), 75)
        return step_loss(self.family, objective, *self.batch, cond, self.geometry,
                         torch.float32).item()

    def distance(self) -> float:
        """Mean absolute pixel distance to the training image of three seeds' renders."""
        target = np.asarray(self.image, dtype=float)
        return float(np.mean([np.abs(np.asarray(self.img2img(
            CAPTION, image=self.image, strength=0.6, num_inference_steps=20,
            guidance_scale=1.0, generator=torch.Generator().manual_seed(seed)).images[0],
            dtype=float) - target).mean() for seed in range(3)]))

    def measure(self, lora: Path | None, tr) -> tuple[float, float]:
        from lora_studio.core.lora.apply import load_lora_into_pipeline

        if lora is not None:
            load_lora_into_pipeline(self.pipe, lora, "judged")
        try:
            return self.fixed_loss(tr), self.distance()
        finally:
            if lora is not None:
                self.pipe.delete_adapters("judged")


@pytest.mark.parametrize("arch", ["sdxl", "sd2-v"])
def test_lora_learns_the_training_image(arch, tiny_models, picture, tmp_path):
    model = with_tiny_shapes_vae(tiny_models[arch].folder, tmp_path / "model")
    cfg = train(model, picture, tmp_path / "out")
    judge = Judge(model, picture)
    base_loss, base_distance = judge.measure(None, cfg.train)
    mid_loss, _ = judge.measure(cfg.output_dir / f"l-step{STEPS // 2}.safetensors", cfg.train)
    loss, distance = judge.measure(cfg.lora_path, cfg.train)
    print(f"{arch}: fixed loss {base_loss:.3f} -> {mid_loss:.3f} -> {loss:.3f}; "
          f"img2img distance {base_distance:.1f} -> {distance:.1f}")
    assert mid_loss < 0.8 * base_loss and loss < 0.7 * base_loss and loss <= mid_loss * 1.05
    assert distance < 0.8 * base_distance
