"""The training loop on the tiny model: what a user of `train` would notice."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.core.jobs import JobControl
from lora_studio.core.train.config import config_from_dict
from lora_studio.core.train.trainer import run_training_job

CAPTIONS = ["zqstar, red", "zqstar, green", "zqstar, blue", "zqstar, yellow"]
COLORS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40)]


def make_dataset(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(count):
        img = Image.new("RGB", (64, 64), (245, 245, 240))
        draw = ImageDraw.Draw(img)
        x, y = rng.randint(4, 24), rng.randint(4, 24)
        draw.polygon([(x + 18, y), (x + 36, y + 36), (x, y + 14), (x + 36, y + 14), (x, y + 36)],
                     fill=COLORS[i % 4])
        img.save(folder / f"img_{i}.png")
        (folder / f"img_{i}.txt").write_text(CAPTIONS[i % 4])
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "stars")


def make_config(model_dir, data_dir, out, **sections):
    data = {
        "model": {"base": str(model_dir)},
        "dataset": {"path": str(data_dir), "resolution": 32, "default_caption": "zqstar"},
        "lora": {"rank": 4, "alpha": 4.0},
        "train": {"steps": 3, "learning_rate": 1e-3, "seed": 3},
        "output": {"path": str(out), "name": "t", "save_precision": "fp32"},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


class Recorder:
    def __init__(self, on_event=None):
        self.events: list = []
        self.on_event = on_event

    def __call__(self, event):
        self.events.append(event)
        if self.on_event:
            self.on_event(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def terminal(self):
        ends = [e for e in self.events if isinstance(e, (ev.Finished, ev.Failed, ev.Cancelled))]
        assert len(ends) == 1, f"expected exactly one terminal event, got {ends}"
        assert self.events[-1] is ends[0]
        return ends[0]


def run(cfg, control=None, resume=None, on_event=None):
    rec = Recorder(on_event)
    run_training_job(cfg, rec, control or JobControl(), resume_from=resume)
    return rec


def lora_tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_training_changes_only_lora_weights_and_writes_a_kohya_file(tiny_model_dir, dataset,
                                                                    tmp_path, monkeypatch):
    import lora_studio.core.models.loading as loading

    captured = {}
    real = loading.load_pipeline

    def capture(*args, **kwargs):
        captured["pipe"] = real(*args, **kwargs)
        return captured["pipe"]

    monkeypatch.setattr(loading, "load_pipeline", capture)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "out",
                      lora={"targets": "attention+mlp", "train_text_encoder": True})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    steps = [e.step for e in rec.of(ev.StepProgress)]
    assert steps == [1, 2, 3]
    assert all(e.loss > 0 and e.lr == pytest.approx(1e-3) for e in rec.of(ev.StepProgress))

    pipe = captured["pipe"]
    for component in ("unet", "vae", "text_encoder"):
        base = load_file(str(next((tiny_model_dir / component).glob("*.safetensors"))))
        trained = {n.replace(".base_layer", ""): p for n, p in
                   getattr(pipe, component).state_dict().items() if "lora_" not in n}
        for name, tensor in base.items():
            key = name if name in trained else name.replace("text_model.", "")
            assert torch.equal(trained[key].cpu(), tensor), f"{component}.{name} changed"
    ups = {n: p for n, p in pipe.unet.named_parameters() if "lora_B" in n}
    assert ups and all(p.abs().sum() > 0 for p in ups.values())  # B starts at 0: it trained

    saved = lora_tensors(cfg.lora_path)
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in saved)
    assert any(k.startswith("lora_te_") for k in saved)
    assert any("ff_net_2" in k for k in saved)
    with safe_open(str(cfg.lora_path), "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_dim"] == "4" and meta["ss_steps"] == "3"
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["modelspec.trigger_phrase"] == "zqstar"
    assert '"zqstar": 4' in meta["ss_tag_frequency"]
    # the config used is saved beside the LoRA and reproduces the run's settings
    assert cfg.config_copy_path.is_file()
    from lora_studio.core.train.config import load_config
    assert load_config(cfg.config_copy_path) == cfg


def test_diffusers_format_output_loads_in_plain_diffusers(tiny_model_dir, dataset, tmp_path):
    from diffusers import StableDiffusionPipeline

    cfg = make_config(tiny_model_dir, dataset, tmp_path / "out",
                      train={"steps": 2, "learning_rate": 5e-2},
                      output={"format": "diffusers"})
    assert isinstance(run(cfg).terminal, ev.Finished)
    keys = lora_tensors(cfg.lora_path).keys()
    assert keys and all(k.startswith("unet.") and ".lora_" in k for k in keys)

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def render():
        return pipe("zqstar, red", num_inference_steps=2, height=32, width=32,
                    output_type="np", generator=torch.Generator().manual_seed(0)).images[0]

    base = render()
    pipe.load_lora_weights(str(cfg.lora_path), adapter_name="trained")
    assert abs(render() - base).mean() > 1e-3


def test_gradient_clipping_reaches_the_lora_parameters(tiny_model_dir, dataset, tmp_path):
    norms = {}
    for clip in (0.0, 1e-12):
        cfg = make_config(tiny_model_dir, dataset, tmp_path / f"clip{clip}",
                          train={"steps": 2, "max_grad_norm": clip})
        assert isinstance(run(cfg).terminal, ev.Finished)
        ups = [t for k, t in lora_tensors(cfg.lora_path).items() if k.endswith("lora_up.weight")]
        norms[clip] = torch.stack([t.float().norm() for t in ups]).norm().item()
    # Adam normalises gradients, so only a clip that reaches every LoRA parameter (pushing
    # gradients far below Adam's eps) can shrink the update this much.
    assert norms[1e-12] < norms[0.0] / 100


def test_cancel_stops_within_one_step_and_saves_the_lora(tiny_model_dir, dataset, tmp_path):
    control = JobControl()
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "out", train={"steps": 50})

    def cancel_at_two(event):
        if isinstance(event, ev.StepProgress) and event.step == 2:
            control.cancel()

    rec = run(cfg, control, on_event=cancel_at_two)
    end = rec.terminal
    assert isinstance(end, ev.Cancelled)
    assert max(e.step for e in rec.of(ev.StepProgress)) <= 3
    assert cfg.lora_path.is_file() and str(cfg.lora_path) in end.message
    assert [e.final for e in rec.of(ev.LoraSaved)] == [False]
    assert "--resume" in end.message  # a checkpoint was left to continue from


@pytest.mark.parametrize("cancel_on, doing", [
    ("Buckets", "checking the dataset"),  # said while the dataset is planned: before the model
    ("Caching the latents", "caching the latents"),
])
def test_a_cancel_during_set_up_lands_before_the_next_piece_of_set_up(
        tiny_model_dir, tmp_path, monkeypatch, cancel_on, doing):
    from diffusers import AutoencoderKL

    data = make_dataset(tmp_path / "many", count=12)
    encoded = []
    real_encode = AutoencoderKL.encode

    def counting_encode(self, x, *args, **kwargs):
        encoded.append(x.shape[0])
        return real_encode(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting_encode)
    control = JobControl()
    cfg = make_config(tiny_model_dir, data, tmp_path / "out", train={"steps": 50},
                      dataset={"random_flip": True})

    def cancel_when_said(event):
        if isinstance(event, ev.Log) and event.message.startswith(cancel_on):
            control.cancel()

    # one image per VAE call, so the cache pass has 24 pieces to stop between
    monkeypatch.setattr("lora_studio.core.train.data.cache_batch_size", lambda w, h: 1)
    rec = run(cfg, control, on_event=cancel_when_said)
    end = rec.terminal
    assert isinstance(end, ev.Cancelled)
    assert f"while {doing}" in end.message and "nothing was trained" in end.message
    assert encoded == []  # not one image encoded after the cancel
    assert not rec.of(ev.JobStarted) and not rec.of(ev.StepProgress)
    assert not cfg.lora_path.exists() and not (cfg.output_dir / "checkpoints").exists()


def test_a_cancel_while_the_dataset_is_checked_lands_before_the_next_image(
        tiny_model_dir, tmp_path, monkeypatch):
    from lora_studio.core.dataset import checks

    data = make_dataset(tmp_path / "many", count=12)
    control, decoded = JobControl(), []
    real_inspect = checks.inspect_image

    def inspect_and_cancel(path, **kwargs):
        decoded.append(path)
        if len(decoded) == 2:
            control.cancel()
        return real_inspect(path, **kwargs)

    monkeypatch.setattr(checks, "inspect_image", inspect_and_cancel)
    rec = run(make_config(tiny_model_dir, data, tmp_path / "out"), control)
    assert isinstance(rec.terminal, ev.Cancelled)
    assert "while checking the dataset" in rec.terminal.message
    assert len(decoded) == 2  # not one image decoded after the cancel


def test_save_and_sample_requests_are_honoured(tiny_model_dir, dataset, tmp_path):
    """Asked at step 1: saved and sampled there; asked at step 2, where a save is due anyway:
    one file (the request is not left over for step 3); asked during the last step: its
    preview still comes."""
    control = JobControl()
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "out",
                      train={"steps": 4}, output={"save_every": 2},
                      sample={"prompts": ["zqstar"], "steps": 2})  # previews only when asked

    def ask(event):
        if isinstance(event, ev.StepProgress) and event.step in (1, 2, 4):
            control.request_save()
            control.request_sample()

    rec = run(cfg, control, on_event=ask)
    assert isinstance(rec.terminal, ev.Finished)
    saved = sorted(p.name for p in (tmp_path / "out").glob("t-step*.safetensors"))
    assert saved == ["t-step1.safetensors", "t-step2.safetensors"]
    assert [p.step for p in rec.of(ev.Preview)] == [1, 2, 4]


def test_a_cancelled_job_never_pauses_again():
    control = JobControl()
    control.cancel()
    control.pause()  # e.g. a divergence right after Cancel was pressed
    assert not control.paused
    control.wait_if_paused()  # returns at once


def test_resumed_run_ends_with_the_same_lora_as_an_unbroken_run(tiny_model_dir, dataset,
                                                                 tmp_path):
    settings = dict(train={"steps": 6, "batch_size": 2, "gradient_accumulation": 2,
                           "noise_offset": 0.05, "min_snr_gamma": 5.0,
                           "lr_scheduler": "cosine", "warmup_steps": 1},
                    dataset={"random_flip": True}, checkpoint={"every": 3},
                    lora={"dropout": 0.1})
    unbroken = make_config(tiny_model_dir, dataset, tmp_path / "a", **settings)
    assert isinstance(run(unbroken).terminal, ev.Finished)

    stopped = make_config(tiny_model_dir, dataset, tmp_path / "b", **settings)
    control = JobControl()
    rec = run(stopped, control, on_event=lambda e: isinstance(e, ev.StepProgress)
              and e.step == 3 and control.cancel())
    assert isinstance(rec.terminal, ev.Cancelled)
    checkpoint = tmp_path / "b" / "checkpoints" / "step-3"
    assert [e.path for e in rec.of(ev.CheckpointSaved)] == [checkpoint]

    rec = run(stopped, resume=checkpoint)
    assert isinstance(rec.terminal, ev.Finished)
    assert [e.step for e in rec.of(ev.StepProgress)] == [4, 5, 6]
    a, b = lora_tensors(unbroken.lora_path), lora_tensors(stopped.lora_path)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_vae_encodes_each_image_once_per_flip_over_many_epochs(tiny_model_dir, dataset,
                                                               tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    encoded = []
    real_encode = AutoencoderKL.encode

    def counting_encode(self, x, *args, **kwargs):
        encoded.append(x.shape[0])
        return real_encode(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting_encode)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "out",
                      train={"steps": 6, "batch_size": 2}, dataset={"random_flip": True})
    assert isinstance(run(cfg).terminal, ev.Finished)  # 12 samples = 3 epochs of 4 images
    assert sum(encoded) == 4 * 2
    encoded.clear()
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "nocache",
                      train={"steps": 3, "batch_size": 2, "cache_latents": False})
    assert isinstance(run(cfg).terminal, ev.Finished)
    assert sum(encoded) == 6  # without the cache: every sample, every step


def test_a_preview_is_lora_studio_generate_with_that_steps_file_pixel_for_pixel(
        tiny_model_dir, dataset, tmp_path):
    """Step 2's preview (a saved step file, fp16 as shipped) and the final one (the LoRA file)
    each equal `lora-studio generate` with that file, seed and settings: same pixels, same PNG
    info. A non-default sampler, negative prompt, size and CFG come from kohya's inline options."""
    import numpy as np
    from PIL import Image

    from lora_studio.cli import main
    from lora_studio.core.generate.pnginfo import PARAMETERS_KEY

    line = "zqstar, red --n blurry --w 40 --h 32 --d 7 --l 4.5 --s 3 --ss dpmsolver++"
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "out",
                      train={"steps": 4, "learning_rate": 2e-2},
                      output={"save_every": 2, "save_precision": "fp16"},
                      sample={"every": 2, "prompts": [line]})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished)
    previews = {p.step: p for p in rec.of(ev.Preview)}
    assert sorted(previews) == [2, 4]
    assert all(p.problem == "" for p in previews.values())  # checked where they were made
    assert not (tmp_path / "out" / ".preview").exists()
    files = {2: tmp_path / "out" / "t-step2.safetensors", 4: cfg.lora_path}
    for step, lora in files.items():
        out = tmp_path / f"generated-{step}"
        assert main(["generate", "--model", str(tiny_model_dir), "--lora", str(lora),
                     "--prompt", "zqstar, red", "--negative", "blurry", "--width", "40",
                     "--height", "32", "--seed", "7", "--cfg", "4.5", "--steps", "3",
                     "--sampler", "DPM++ 2M", "--out", str(out)]) == 0
        [png] = out.glob("*.png")
        generated = Image.open(png)
        shown = previews[step].image
        assert np.array_equal(np.asarray(shown), np.asarray(generated.convert("RGB")))
        assert shown.info[PARAMETERS_KEY] == generated.info[PARAMETERS_KEY]
        saved = Image.open(tmp_path / "out" / "samples" / f"step-{step:06d}-0.png")
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(shown))
    assert not np.array_equal(np.asarray(previews[2].image), np.asarray(previews[4].image))


def test_previews_change_nothing_in_the_trained_lora(tiny_model_dir, dataset, tmp_path):
    """Rendering with the step's file switches the training adapter off and back on: a run
    that previews at every step ends with the same LoRA as one that never previews."""
    quiet = make_config(tiny_model_dir, dataset, tmp_path / "quiet",
                        train={"steps": 4, "learning_rate": 1e-2})
    shown = make_config(tiny_model_dir, dataset, tmp_path / "shown",
                        train={"steps": 4, "learning_rate": 1e-2},
                        sample={"every": 1, "prompts": ["zqstar"], "steps": 2})
    assert isinstance(run(quiet).terminal, ev.Finished)
    rec = run(shown)
    assert isinstance(rec.terminal, ev.Finished) and len(rec.of(ev.Preview)) == 4
    a, b = lora_tensors(quiet.lora_path), lora_tensors(shown.lora_path)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    changed = sum((a[k].float().abs().sum() > 0).item() for k in a if "lora_up" in k)
    assert changed > 0  # the LoRA did train


def test_skipped_files_warn_and_an_empty_dataset_fails_with_advice(tiny_model_dir, dataset,
                                                                   tmp_path):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(dataset, mixed)
    (mixed / "broken.png").write_bytes(b"not really a png")
    rec = run(make_config(tiny_model_dir, mixed, tmp_path / "o1", train={"steps": 1}))
    assert isinstance(rec.terminal, ev.Finished)
    assert any("broken.png" in e.message and e.level == "warning" for e in rec.of(ev.Log))

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.png").write_bytes(b"not really a png")
    rec = run(make_config(tiny_model_dir, empty, tmp_path / "o2"))
    end = rec.terminal
    assert isinstance(end, ev.Failed)
    assert "No usable images" in end.message and "Add PNG/JPEG" in end.message
    assert "Traceback" in end.details
    assert not rec.of(ev.StepProgress)


def test_fp16_on_cpu_fails_with_an_error_naming_the_key(tiny_model_dir, dataset, tmp_path):
    rec = run(make_config(tiny_model_dir, dataset, tmp_path / "o",
                          train={"mixed_precision": "fp16"}))
    end = rec.terminal
    assert isinstance(end, ev.Failed)
    assert "train.mixed_precision" in end.message and "fp16 needs a CUDA GPU" in end.message


def test_adamw8bit_without_cuda_fails_with_what_to_use_instead(tiny_model_dir, dataset, tmp_path):
    rec = run(make_config(tiny_model_dir, dataset, tmp_path / "o",
                          train={"optimizer": "adamw8bit"}))
    end = rec.terminal
    assert isinstance(end, ev.Failed)
    assert "train.optimizer" in end.message and "CUDA" in end.message
    assert 'optimizer = "adamw"' in end.message
    assert not (tmp_path / "o" / "t.safetensors").exists()


def test_v_prediction_model_trains_on_the_velocity(tiny_vpred_model_dir, dataset, tmp_path,
                                                   monkeypatch):
    import lora_studio.core.train.objective as objective

    seen = set()
    real = objective.training_target

    def spy(scheduler, *args):
        seen.add(scheduler.config.prediction_type)
        return real(scheduler, *args)

    monkeypatch.setattr(objective, "training_target", spy)
    cfg = make_config(tiny_vpred_model_dir, dataset, tmp_path / "o",
                      train={"steps": 2, "min_snr_gamma": 5.0})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished), rec.terminal
    assert seen == {"v_prediction"}
    with safe_open(str(cfg.lora_path), "pt") as f:
        assert f.metadata()["ss_base_model_version"] == "sd_v2_v"


def test_a_timestep_range_trains_only_those_timesteps(tiny_model_dir, dataset, tmp_path,
                                                      monkeypatch):
    """kohya's min_timestep / max_timestep: every noised sample's timestep lies in the range."""
    import lora_studio.core.train.objective as objective

    seen: list[int] = []
    real = objective.training_target

    def spy(scheduler, latents, noise, timesteps):
        seen.extend(int(t) for t in timesteps)
        return real(scheduler, latents, noise, timesteps)

    monkeypatch.setattr(objective, "training_target", spy)
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "o",
                      train={"steps": 6, "batch_size": 4, "min_timestep": 400,
                             "max_timestep": 420})
    assert isinstance(run(cfg).terminal, ev.Finished)
    assert len(seen) == 24
    assert all(400 <= t < 420 for t in seen), seen
    assert len(set(seen)) > 5  # drawn across the range, not one fixed value
