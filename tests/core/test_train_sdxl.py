"""SDXL LoRA training on the tiny SDXL model: what a user of `train` would notice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from models_fixtures import tiny_models  # noqa: F401 (the session's tiny models)
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.train.config import config_from_dict
from lora_studio.core.train.trainer import run_training_job

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: 1 thread is steadier

# (width, height), colour, caption: a landscape, a portrait and an odd-sized picture
PICTURES = [((96, 64), (220, 40, 40), "zqstar, red"),
            ((64, 96), (40, 200, 60), "zqstar, green"),
            ((100, 70), (40, 60, 220), "zqstar, blue")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sdxl-data") / "shapes"
    folder.mkdir()
    for i, ((w, h), colour, caption) in enumerate(PICTURES):
        img = Image.new("RGB", (w, h), (245, 245, 240))
        ImageDraw.Draw(img).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=colour)
        img.save(folder / f"img_{i}.png")
        (folder / f"img_{i}.txt").write_text(caption)
    return folder


def config(base, data, out, **sections):
    values = {
        "model": {"base": str(base)},
        "dataset": {"path": str(data), "resolution": 64, "enable_bucket": False},
        "lora": {"rank": 4, "alpha": 2.0},
        "train": {"steps": 2, "learning_rate": 1e-3, "seed": 4},
        "output": {"path": str(out), "name": "xl", "save_precision": "fp32"},
    }
    for section, extra in sections.items():
        values.setdefault(section, {}).update(extra)
    return config_from_dict(values)


def run(cfg, control=None, resume=None, on_event=None):
    events: list = []

    def emit(event):
        events.append(event)
        if on_event:
            on_event(event)

    run_training_job(cfg, emit, control or JobControl(), resume_from=resume)
    ends = [e for e in events if isinstance(e, (ev.Finished, ev.Failed, ev.Cancelled))]
    assert len(ends) == 1 and events[-1] is ends[0]
    return events


def spy_time_ids(monkeypatch) -> list[tuple[list[float], tuple[int, int]]]:
    """(time ids row, pixel size trained at) of every sample the UNet sees in training."""
    from diffusers import UNet2DConditionModel

    seen = []
    real = UNet2DConditionModel.forward

    def forward(self, sample, timestep, encoder_hidden_states, *args, **kwargs):
        added = kwargs.get("added_cond_kwargs")
        if torch.is_grad_enabled() and added is not None:
            pixels = tuple(2 * s for s in sample.shape[-2:])  # the tiny SDXL VAE halves sizes
            seen.extend((row.tolist(), pixels) for row in added["time_ids"])
        return real(self, sample, timestep, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    return seen


def test_time_ids_are_each_images_original_size_crop_and_bucket(tiny_models, photos, tmp_path,
                                                                 monkeypatch):
    """SDXL's added conditioning as the kohya and diffusers SDXL scripts compute it: (original
    height, width, crop top, left, target height, width); here a centre crop of each picture
    resized so its short side is 64 (worked out by hand)."""
    seen = spy_time_ids(monkeypatch)
    cfg = config(tiny_models["sdxl"].folder, photos, tmp_path / "o",
                 train={"steps": 3, "batch_size": 1})
    assert isinstance(run(cfg)[-1], ev.Finished)
    expected = {(64, 96, 0, 16, 64, 64),   # 96x64 -> 96x64, crop x 16..80
                (96, 64, 16, 0, 64, 64),   # 64x96 -> 64x96, crop y 16..80
                (70, 100, 0, 13, 64, 64)}  # 100x70 -> 91x64, crop x 13..77
    assert {tuple(int(v) for v in row) for row, _ in seen} == expected


def test_bucketed_sdxl_run_conditions_on_the_bucket_it_trains_at(tiny_models, photos, tmp_path,
                                                                  monkeypatch):
    seen = spy_time_ids(monkeypatch)
    cfg = config(tiny_models["sdxl"].folder, photos, tmp_path / "o",
                 dataset={"enable_bucket": True, "bucket_reso_steps": 16, "random_flip": True,
                          "center_crop": False},
                 train={"steps": 4, "batch_size": 1})
    assert isinstance(run(cfg)[-1], ev.Finished)
    sizes = {(w, h): (h, w) for (w, h), _, _ in PICTURES}
    buckets = set()
    for row, pixels in seen:
        original, crop, target = tuple(row[0:2]), row[2:4], tuple(int(v) for v in row[4:6])
        assert target == pixels  # the size the latents really have
        assert original in {tuple(map(float, s)) for s in sizes.values()}
        assert all(0 <= c for c in crop)
        buckets.add(target)
    assert len(buckets) >= 2 and buckets != {(64, 64)}  # non-square buckets were used


def test_sdxl_lora_from_a_single_file_with_both_text_encoders(tiny_models, photos, tmp_path):
    """A single-file SDXL checkpoint (the layout finetunes ship in), UNet + both text encoders
    with their own learning rate, gradient checkpointing: a kohya SDXL file as sd-scripts writes
    it, and the preview is what the saved file renders in diffusers."""
    from diffusers import StableDiffusionXLPipeline

    from lora_studio.core.generate.samplers import make_scheduler
    from lora_studio.core.lora.apply import load_lora_into_pipeline

    model = tiny_models["sdxl"]
    cfg = config(model.single_file, photos, tmp_path / "o",
                 model={"config_dir": str(model.config_dir)},  # a tiny, not the shipped, size
                 lora={"train_text_encoder": True, "text_encoder_lr": 5e-4,
                       "targets": "attention+mlp"},
                 train={"steps": 3, "learning_rate": 2e-2, "gradient_checkpointing": True},
                 sample={"every": 3, "prompts": ["zqstar, red"], "steps": 3, "cfg": 3.0,
                         "seed": 5})
    events = run(cfg)
    assert isinstance(events[-1], ev.Finished), events[-1]
    tensors = load_file(str(cfg.lora_path))
    prefixes = {k.split("_")[1] for k in tensors}
    assert prefixes == {"unet", "te1", "te2"}
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)
    assert any(k.startswith("lora_unet_output_blocks_") for k in tensors)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_") for k in tensors)
    with safe_open(str(cfg.lora_path), "pt") as f:
        meta = f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert float(meta["ss_text_encoder_lr"]) == 5e-4

    pipe = StableDiffusionXLPipeline.from_pretrained(model.folder, local_files_only=True)
    pipe.scheduler = make_scheduler(pipe.scheduler.config, "Euler a")
    pipe.set_progress_bar_config(disable=True)

    def render():
        return np.asarray(pipe("zqstar, red", num_inference_steps=3, guidance_scale=3.0,
                               height=64, width=64,
                               generator=torch.Generator().manual_seed(5)).images[0], dtype=int)

    base = render()
    load_lora_into_pipeline(pipe, cfg.lora_path, "trained")
    shown = np.asarray([e for e in events if isinstance(e, ev.Preview)][-1].image, dtype=int)
    assert np.abs(shown - render()).max() <= 2
    assert np.abs(shown - base).max() > 10  # the LoRA visibly changed the image


def test_sdxl_resume_from_the_hub_cache_ends_with_the_unbroken_runs_lora(
        tiny_models, photos, tmp_path, monkeypatch):
    """A model given as a hub id in the local cache; text encoders trained, latents cached,
    mirrored random crops: stopping and resuming changes nothing (1e-6 on the CPU)."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--tiny-org--tiny-sdxl"
    shutil.copytree(tiny_models["sdxl"].folder, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    settings = dict(lora={"train_text_encoder": True},
                    train={"steps": 4, "batch_size": 2, "noise_offset": 0.05},
                    dataset={"random_flip": True, "center_crop": False}, checkpoint={"every": 2})
    unbroken = config("tiny-org/tiny-sdxl", photos, tmp_path / "a", **settings)
    assert isinstance(run(unbroken)[-1], ev.Finished)

    stopped = config("tiny-org/tiny-sdxl", photos, tmp_path / "b", **settings)
    control = JobControl()
    events = run(stopped, control, on_event=lambda e: isinstance(e, ev.StepProgress)
                 and e.step == 2 and control.cancel())
    assert isinstance(events[-1], ev.Cancelled)
    events = run(stopped, resume=tmp_path / "b" / "checkpoints" / "step-2")
    assert [e.step for e in events if isinstance(e, ev.StepProgress)] == [3, 4]
    a, b = load_file(str(unbroken.lora_path)), load_file(str(stopped.lora_path))
    assert a.keys() == b.keys() and any(k.startswith("lora_te2_") for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_sdxl_caption_encoding_is_what_the_pipeline_generates_with(tiny_models):
    """Training conditions on exactly what StableDiffusionXLPipeline.encode_prompt gives at
    inference (both encoders' penultimate states, the second's pooled output); 150 tokens read
    two windows and pool the first, as sd-scripts does."""
    from lora_studio.core.train.families import load_family

    family = load_family(tiny_models["sdxl"].folder)
    pipe = tiny_models["sdxl"].reference_pipeline()
    caption = "zqstar, a red circle on a white background"
    with torch.no_grad():
        cond = family.encode([caption], 75)
        hidden, _, pooled, _ = pipe.encode_prompt(caption, do_classifier_free_guidance=False)
        assert torch.allclose(cond.hidden, hidden, atol=1e-6)
        assert torch.allclose(cond.pooled, pooled, atol=1e-6)
        long = family.encode([caption], 150)
    assert long.hidden.shape[1] == 152 and long.hidden.shape[2] == hidden.shape[2]
    assert torch.allclose(long.pooled, pooled, atol=1e-6)  # the short caption fits window 1


def test_sdxl_vae_stays_fp32_in_fp16_runs_unless_it_is_the_fp16_fix(tiny_models):
    """The SDXL VAE overflows in fp16: with `force_upcast` in its config (SDXL base's) it runs
    in fp32 in an fp16 run; the fp16-fix VAE (no force_upcast) and bf16 runs keep the run's."""
    from lora_studio.core.train.families import family_class, load_family

    family = load_family(tiny_models["sdxl"].folder)
    assert family.vae.config.force_upcast
    assert family.vae_dtype(torch.float16) == torch.float32
    assert family.vae_dtype(torch.bfloat16) == torch.bfloat16
    family.vae.register_to_config(force_upcast=False)
    assert family.vae_dtype(torch.float16) == torch.float16
    assert family_class("sd2-v") is family_class("sd1")  # one family for SD 1.x / 2.x
    with pytest.raises(Exception, match="cannot train LoRAs for 'flux'"):
        family_class("flux")


def test_an_sdxl_preview_is_lora_studio_generate_with_the_saved_file(tiny_models, photos,
                                                                     tmp_path):
    """The SDXL family's previews render through Generate's code too: the same pixels and PNG
    info as `lora-studio generate` with the saved file, seed and settings."""
    from lora_studio.cli import main

    model = tiny_models["sdxl"]
    cfg = config(model.folder, photos, tmp_path / "o", output={"save_precision": "fp16"},
                 train={"steps": 2, "learning_rate": 2e-2},
                 sample={"every": 2, "prompts": ["zqstar, red --n blurry --d 7 --s 3 --l 5"]})
    events = run(cfg)
    assert isinstance(events[-1], ev.Finished), events[-1]
    preview = [e for e in events if isinstance(e, ev.Preview)][-1]
    out = tmp_path / "generated"
    assert main(["generate", "--model", str(model.folder), "--lora", str(cfg.lora_path),
                 "--prompt", "zqstar, red", "--negative", "blurry", "--seed", "7", "--steps",
                 "3", "--cfg", "5", "--width", "64", "--height", "64", "--out", str(out)]) == 0
    generated = Image.open(next(out.glob("*.png")))
    assert np.array_equal(np.asarray(preview.image), np.asarray(generated.convert("RGB")))
    assert preview.image.info["parameters"] == generated.info["parameters"]
