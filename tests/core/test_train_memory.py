"""The GPU memory estimate (`core.train.memory`) against what training really keeps.

On the tiny SD 1.x and SDXL models (real CPU runs): the frozen weights, the LoRA, its gradients
and the optimizer state are compared byte for byte after a real optimizer step, and the
activations with the bytes autograd really saves during one forward of the UNet with the
trainer's own LoRA (`memory_probe.saved_bytes`). On the full-size SD 1.5 and SDXL configs
(meta device, no memory): exact parameter counts, the activation formula against autograd's
count, and the fp16 / bf16 factor against an emulation of CUDA autocast. Then what a person
changing settings would see: more pixels / batch / rank cost more, checkpointing and 8-bit
AdamW cost less, SDXL costs more than SD 1.5, and the advice names real config keys and lowers
the estimate when followed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from lora_studio.core.paths import configs_dir
from lora_studio.core.train.config import SECTIONS, TrainConfig
from lora_studio.core.train.memory import (
    GIB,
    HALF_ACTIVATION_FACTOR,
    estimate_memory,
    lower_memory_advice,
)
from lora_studio.core.train.memory_counts import (
    optimizer_state_bytes,
    parameter_count,
    read_config,
    text_encoder_activation_values,
    unet_activation_values,
)
from memory_probe import (
    load_networks,
    measure_step,
    text_encoder_activation_bytes,
    text_encoder_with_lora,
    unet_activation_bytes,
    unet_with_lora,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTIVATION_TOLERANCE = 0.10  # measured on the tiny models: within 4%
FULL_SIZE_TOLERANCE = 0.06  # the formula against autograd's count on the meta device
HALF_TOLERANCE = 0.10  # the per-architecture fp16 / bf16 factor against emulated autocast
SD15, SDXL = configs_dir() / "sd15", configs_dir() / "sdxl"


@pytest.fixture(scope="module")
def tiny_folders(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """arch -> a tiny random-weight model folder (`lora-studio make-tiny-model --arch ...`)."""
    from lora_studio.core.models.tiny_sdxl import make_tiny_sdxl_model

    sdxl = make_tiny_sdxl_model(tmp_path_factory.mktemp("memory") / "tiny-sdxl", seed=5)
    return {"sd1": tiny_model_dir, "sdxl": sdxl}


def config(res: int = 512, **settings) -> TrainConfig:
    """A config as the Train form makes it: `settings` as {"section.key": value}."""
    cfg = TrainConfig()
    cfg.dataset.path, cfg.dataset.resolution = "unused", res
    for key, value in settings.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


def measure(folder: Path, cfg: TrainConfig, batch: int, res: int) -> dict[str, int]:
    """What a real training step on the CPU keeps (fp32): `memory_probe.measure_step`."""
    torch.manual_seed(0)
    return measure_step(load_networks(folder), cfg, (res, res), batch, steps=1)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("res,batch", [(64, 1), (128, 2)])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimate_parts_match_a_real_step_on_the_tiny_models(tiny_folders, arch, res, batch,
                                                             checkpointing):
    folder = tiny_folders[arch]
    cfg = config(res, **{"lora.rank": 4, "train.batch_size": batch,
                         "train.gradient_checkpointing": checkpointing,
                         "train.mixed_precision": "no"})
    estimate = estimate_memory(cfg, arch, buckets=[(res, res)], model=folder)
    found = measure(folder, cfg, batch, res)

    assert estimate.unet_weights == found["unet"]
    assert estimate.text_encoder_weights == found["text_encoders"]
    assert estimate.vae_weights == found["vae"]
    assert estimate.lora_params == found["params"] == estimate.lora_grads == found["grads"]
    assert estimate.optimizer_state == found["optimizer"]  # AdamW: two fp32 moments
    assert estimate.activations == pytest.approx(found["activations"],
                                                 rel=ACTIVATION_TOLERANCE)


def test_checkpointing_lowers_the_measured_and_the_estimated_activations(tiny_folders):
    folder = tiny_folders["sd1"]
    results = {}
    for checkpointing in (False, True):
        cfg = config(64, **{"train.gradient_checkpointing": checkpointing,
                            "train.mixed_precision": "no"})
        results[checkpointing] = (estimate_memory(cfg, "sd1", [(64, 64)], folder),
                                  measure(folder, cfg, 1, 64)["activations"])
    (plain, plain_found), (ckpt, ckpt_found) = results[False], results[True]
    assert ckpt_found < 0.5 * plain_found
    assert ckpt.activations + ckpt.recompute < 0.5 * plain.activations
    assert ckpt.total < plain.total


def test_adafactor_state_is_what_transformers_keeps(tiny_folders):
    folder = tiny_folders["sd1"]
    cfg = config(64, **{"train.optimizer": "adafactor", "lora.rank": 8,
                        "lora.targets": "attention+mlp", "train.mixed_precision": "no"})
    estimate = estimate_memory(cfg, "sd1", [(64, 64)], folder)
    assert estimate.optimizer_state == measure(folder, cfg, 1, 64)["optimizer"]
    assert estimate.optimizer_state < estimate_memory(
        config(64, **{"lora.rank": 8, "lora.targets": "attention+mlp"}), "sd1", [(64, 64)],
        folder).optimizer_state


def test_optimizer_state_per_tensor_by_hand():
    big, small = (16, 320), (4, 320)  # 5120 values (8-bit), 1280 (below bitsandbytes' 4096)
    assert optimizer_state_bytes("adamw", "A", big) == 8 * 5120
    assert optimizer_state_bytes("adamw8bit", "A", big) == 2 * 5120 + 2 * 4 * 20
    assert optimizer_state_bytes("adamw8bit", "A", small) == 8 * 1280
    assert optimizer_state_bytes("adafactor", "A", big) == 4 * (16 + 320) + 4  # + its RMS
    assert optimizer_state_bytes("prodigy", "A", big) == 16 * 5120
    assert optimizer_state_bytes("prodigy", "B", (320, 16)) == 12 * 5120 + 4  # scalar p0


# ------------------------------------------------------------------ full size, on the meta device
def test_full_size_networks_are_counted_exactly_from_their_configs():
    assert parameter_count(str(SD15), "unet") == 859_520_964
    assert parameter_count(str(SDXL), "unet") == 2_567_463_684
    assert parameter_count(str(SDXL), "text_encoder_2") == 694_659_840
    assert parameter_count(str(SD15), "vae") == 83_653_863
    est = estimate_memory(config(512, **{"train.mixed_precision": "fp16"}), "sd1")
    assert est.unet_weights == 2 * 859_520_964  # fp16 frozen weights
    fp32 = estimate_memory(config(512), "sd1")
    assert fp32.unet_weights == 4 * 859_520_964


@pytest.mark.parametrize("folder,latent", [(SD15, 64), (SDXL, 128)], ids=["sd15", "sdxl"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_formula_matches_autograd_on_full_size_unets(folder, latent, checkpointing):
    unet_config = read_config(folder, "unet")
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet = unet_with_lora(unet_config, device="meta", rank=16, checkpointing=checkpointing)
    counted = unet_activation_bytes(unet, 1, latent, latent) / 4
    per_pixel, per_sample, _ = unet_activation_values(unet_config, targets, 16, checkpointing)
    assert per_pixel * latent * latent + per_sample == pytest.approx(counted,
                                                                    rel=FULL_SIZE_TOLERANCE)


@pytest.mark.parametrize("arch,folder,latent", [("sd1", SD15, 64), ("sdxl", SDXL, 128)],
                         ids=["sd15", "sdxl"])
def test_half_precision_factor_matches_emulated_autocast(arch, folder, latent):
    unet_config = read_config(folder, "unet")
    fp32 = unet_activation_bytes(unet_with_lora(unet_config, device="meta", rank=16), 1,
                                 latent, latent)
    half = unet_activation_bytes(unet_with_lora(unet_config, device="meta", rank=16,
                                                weight_dtype=torch.bfloat16),
                                 1, latent, latent, autocast=torch.bfloat16)
    assert half / fp32 == pytest.approx(HALF_ACTIVATION_FACTOR[arch][0], rel=HALF_TOLERANCE)


@pytest.mark.parametrize("folder,component,cls", [
    (SD15, "text_encoder", "CLIPTextModel"),
    (SDXL, "text_encoder_2", "CLIPTextModelWithProjection")], ids=["clip-l", "open-clip-g"])
@pytest.mark.parametrize("preset", ["attention", "attention+mlp"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_text_encoder_formula_matches_autograd(folder, component, cls, preset, checkpointing):
    from lora_studio.core.train.config import TARGET_PRESETS

    targets = TARGET_PRESETS[preset]["text_encoder"]
    model = text_encoder_with_lora(folder / component, cls, targets=targets,
                                   checkpointing=checkpointing)
    counted = text_encoder_activation_bytes(model, 1) / 4
    formula = 77 * text_encoder_activation_values(read_config(folder, component), targets,
                                                  checkpointing)
    assert formula == pytest.approx(counted, rel=FULL_SIZE_TOLERANCE)


# ------------------------------------------------------------------ what settings do to it
def total(arch: str = "sd1", res: int = 512, buckets=None, **settings) -> int:
    return estimate_memory(config(res, **settings), arch, buckets).total


def test_more_pixels_batch_or_rank_cost_more():
    one = [(512, 512)]
    assert total(res=768, buckets=[(768, 768)]) > total(buckets=one)
    assert total(buckets=one, **{"train.batch_size": 2}) > total(buckets=one)
    assert total(buckets=one, **{"lora.rank": 64}) > total(buckets=one)
    assert total(buckets=[(512, 512), (640, 640)]) > total(buckets=one)  # the largest counts


def test_checkpointing_and_8bit_adam_cost_less_and_caching_no_more():
    one = [(512, 512)]
    base = {"train.mixed_precision": "fp16", "lora.rank": 64, "lora.targets": "attention+mlp"}
    plain = estimate_memory(config(**base), "sd1", one)
    ckpt = estimate_memory(config(**base, **{"train.gradient_checkpointing": True}), "sd1", one)
    eight = estimate_memory(config(**base, **{"train.optimizer": "adamw8bit"}), "sd1", one)
    assert ckpt.total < plain.total - 0.5 * GIB
    assert eight.optimizer_state < 0.3 * plain.optimizer_state and eight.total < plain.total
    # The trainer keeps the VAE and text encoders on the GPU and caches on the CPU: caching
    # lowers nothing; with one image per bucket it costs the same.
    uncached = estimate_memory(config(**base, **{"train.cache_latents": False}), "sd1", one)
    assert uncached.total == plain.total and uncached.weights == plain.weights


def test_the_latent_cache_pass_encodes_a_megapixel_at_a_time():
    """TrainData.cache_latents encodes one 1024 px image per VAE call (eight at once took
    ~20 GiB for SDXL) and four at 512 px: a full bucket costs no more than that."""
    settings = {"train.mixed_precision": "bf16", "train.gradient_checkpointing": True}
    few = estimate_memory(config(1024, **settings), "sdxl", [(1024, 1024)])
    many = estimate_memory(config(1024, **settings), "sdxl", [(1024, 1024)] * 12)
    assert many.encoding == few.encoding and many.total == few.total
    settings["dataset.random_flip"] = False
    one = estimate_memory(config(512, **settings), "sd1", [(512, 512)])
    full = estimate_memory(config(512, **settings), "sd1", [(512, 512)] * 12)
    assert full.encoding == 4 * one.encoding  # four 512 px images per call


def test_sdxl_needs_more_than_sd15_at_native_sizes():
    settings = {"train.mixed_precision": "fp16"}
    sd15 = estimate_memory(config(512, **settings), "sd1", [(512, 512)])
    sdxl = estimate_memory(config(1024, **settings), "sdxl", [(1024, 1024)])
    assert sdxl.weights > 3 * sd15.weights
    assert sdxl.activations > 4 * sd15.activations
    assert sdxl.total > sd15.total + 5 * GIB
    assert sdxl.vae_weights == 2 * sd15.vae_weights  # fp16 SDXL runs keep the VAE in fp32


def test_advice_names_real_keys_biggest_saving_first_and_each_lowers_it():
    import copy
    import tomllib

    settings = {"train.batch_size": 4, "lora.rank": 64, "train.mixed_precision": "no",
                "lora.train_text_encoder": True}
    cfg, buckets = config(768, **settings), [(768, 768)]
    before = estimate_memory(cfg, "sd1", buckets).total
    advice = lower_memory_advice(cfg, "sd1", buckets)
    keys, savings = [], []
    for line in advice:
        setting, _, saving = line.partition(": about ")
        key, _, value = setting.partition(" = ")
        section, name = key.split(".")
        assert name in SECTIONS[section].__dataclass_fields__, line
        changed = copy.deepcopy(cfg)
        setattr(getattr(changed, section), name, tomllib.loads(f"v = {value}")["v"])
        res = changed.dataset.resolution
        after = estimate_memory(changed, "sd1", [(res, res)]).total
        assert after < before, line
        amount, unit = saving.split()[:2]
        savings.append(float(amount) * (1024 if unit == "GiB" else 1))
        keys.append(key)
    assert {"train.gradient_checkpointing", "train.batch_size", "train.mixed_precision",
            "lora.rank", "dataset.resolution", "lora.train_text_encoder"} <= set(keys)
    assert savings == sorted(savings, reverse=True)
    assert keys[0] in ("train.gradient_checkpointing", "train.batch_size")


# ------------------------------------------------------------------ the command line
def write_config(folder: Path, model: Path, images: int = 3) -> Path:
    data = folder / "images"
    data.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (64, 64), (40 * i, 80, 120)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("zqstar, a shape", encoding="utf-8")
    toml = folder / "train.toml"
    toml.write_text(f'[model]\nbase = "{model.as_posix()}"\n[dataset]\npath = "images"\n'
                    f'resolution = 64\n[output]\npath = "out"\n', encoding="utf-8")
    return toml


def test_memory_command_prints_parts_total_and_advice(tiny_folders, tmp_path, capsys):
    from lora_studio.cli import main

    toml = write_config(tmp_path, tiny_folders["sdxl"])
    assert main(["memory", str(toml), "--set", "train.batch_size=2"]) == 0
    out = capsys.readouterr().out
    assert "(SDXL), largest bucket 64x64, batch 2" in out
    assert "Buckets of the 3 dataset images." in out
    for part in ("UNet weights", "optimizer state", "activations", "overhead", "total"):
        assert f"  {part}" in out
    advice = [line for line in out.splitlines() if line.startswith("  - ")]
    assert advice and advice[0].startswith("  - train.")

    assert main(["memory", str(toml), "--json", "--set", "train.batch_size=2"]) == 0
    report = json.loads(capsys.readouterr().out)
    from lora_studio.core.train.config import load_config

    cfg = load_config(toml, ["train.batch_size=2"])
    expected = estimate_memory(cfg, "sdxl", [(64, 64)] * 3, model=tiny_folders["sdxl"])
    assert report["total"] == expected.total and report["arch"] == "sdxl"
    assert report["parts"]["activations"] == expected.activations


def test_memory_command_without_the_dataset_says_what_it_assumed(tiny_folders, tmp_path,
                                                                  capsys):
    from lora_studio.cli import main

    toml = write_config(tmp_path, tiny_folders["sd1"])
    assert main(["memory", str(toml), "--set", f"dataset.path={tmp_path / 'nowhere'}"]) == 0
    out = capsys.readouterr().out
    assert "Dataset not read" in out and "(SD 1.x)" in out
    assert main(["memory", str(tmp_path / "missing.toml")]) == 2
    assert "file not found" in capsys.readouterr().err
