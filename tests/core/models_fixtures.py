"""Tiny model fixtures for the base-model loading tests, each built once per test session.

Import the fixtures you use into a test module (`from models_fixtures import tiny_files`).
Builds are memoised at module level, so several test modules share one build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_BUILT: dict[str, object] = {}

ARCHS = ("sd1", "sd2", "sd2-v", "sdxl")


def _once(key, build):
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


def _make_folder(arch: str, out: Path) -> Path:
    if arch == "sdxl":
        from lora_studio.core.models.tiny_sdxl import make_tiny_sdxl_model

        return make_tiny_sdxl_model(out, seed=5)
    from lora_studio.core.models.tiny import make_tiny_model

    return make_tiny_model(out, seed={"sd1": 2, "sd2": 3, "sd2-v": 4}[arch],
                           prediction_type="v_prediction" if arch == "sd2-v" else "epsilon",
                           arch="sd1" if arch == "sd1" else "sd2")


class TinyModel:
    """A tiny diffusers folder, its original-layout single file and a config-only folder."""

    def __init__(self, arch: str, root: Path) -> None:
        from lora_studio.core.models.original_layout import save_single_file
        from lora_studio.core.models.single_file import copy_model_configs

        self.arch = arch
        self.folder = _make_folder(arch, root / f"tiny-{arch}")
        self.config_dir = copy_model_configs(self.folder, root / f"tiny-{arch}-configs")
        self.single_file = save_single_file(self.reference_pipeline(),
                                            root / f"tiny-{arch}.safetensors")

    def reference_pipeline(self):
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        if self.arch == "sdxl":
            return StableDiffusionXLPipeline.from_pretrained(self.folder, local_files_only=True)
        return StableDiffusionPipeline.from_pretrained(
            self.folder, local_files_only=True, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, TinyModel]:
    """arch → TinyModel for sd1, sd2 (epsilon), sd2-v and sdxl."""
    return _once("tiny_models", lambda: {
        arch: TinyModel(arch, tmp_path_factory.mktemp(f"models-{arch}")) for arch in ARCHS})


def component_mismatches(pipe, reference) -> dict[str, list[str]]:
    """component → keys whose tensors differ (or are missing) between two pipelines."""
    import torch

    names = ["unet", "vae", "text_encoder", "text_encoder_2"]
    out = {}
    for name in names:
        ref = getattr(reference, name, None)
        if ref is None:
            continue
        got = getattr(pipe, name).state_dict()
        want = ref.state_dict()
        out[name] = [k for k in want if k not in got or not torch.equal(got[k], want[k])]
        out[name] += [k for k in got if k not in want]
    return out


def generate(pipe, seed: int = 0):
    """A 64x64 image array from 2 steps with a fixed seed."""
    import numpy as np
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64,
                 generator=generator, guidance_scale=1.0).images[0]
    return np.asarray(image)
