"""An architecture has one name in code: every per-architecture table agrees with the registry
in `core/models/architecture.py`, and the registry holds what other tools expect."""

from __future__ import annotations

import pytest

from lora_studio.core.generate import session
from lora_studio.core.lora import metadata, model
from lora_studio.core.lora.metadata import build_training_metadata
from lora_studio.core.models import architecture as registry
from lora_studio.core.models.architecture import (
    ARCH_DISPLAY,
    ARCHITECTURES,
    arch_of_base_model_version,
    arch_of_modelspec,
    architecture,
    architectures,
    base_model_version,
    lora_family,
    modelspec_architecture,
    native_size,
)
from lora_studio.core.models.single_file import CONFIG_FOLDERS
from lora_studio.core.paths import configs_dir

# what A1111 / kohya / ComfyUI / ModelSpec call each architecture (issue 20)
EXPECTED = {
    "sd1": ("SD 1.x", "sd1", 512, "sd_v1", "stable-diffusion-v1/lora", "epsilon"),
    "sd2": ("SD 2.x", "sd2", 512, "sd_v2", "stable-diffusion-v2-512/lora", "epsilon"),
    "sd2-v": ("SD 2.x (v-prediction)", "sd2", 768, "sd_v2_v",
              "stable-diffusion-v2-768-v/lora", "v_prediction"),
    "sdxl": ("SDXL", "sdxl", 1024, "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora",
             "epsilon"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_registry_holds_the_names_other_tools_use(name):
    arch = architecture(name)
    assert (arch.name, arch.label, arch.lora_family, arch.native_size, arch.base_model_version,
            arch.modelspec_lora, arch.prediction_type) == (name, *EXPECTED[name])
    assert (base_model_version(name), modelspec_architecture(name), lora_family(name),
            native_size(name)) == (EXPECTED[name][3], EXPECTED[name][4], EXPECTED[name][1],
                                   EXPECTED[name][2])
    assert arch.is_v2 == (name in ("sd2", "sd2-v"))
    # both ways: the stored names lead back to the architecture
    assert arch_of_base_model_version(arch.base_model_version) == name
    assert arch_of_modelspec(arch.modelspec_lora) == name
    assert arch_of_modelspec(arch.modelspec_model) == name  # a checkpoint's ModelSpec


def test_every_other_table_is_derived_from_the_registry():
    names = [a.name for a in architectures()]
    assert list(ARCHITECTURES) == names == list(EXPECTED)
    assert ARCH_DISPLAY == {n: architecture(n).label for n in names}
    assert model.ARCHS == registry.LORA_FAMILIES == ("sd1", "sd2", "sdxl")
    assert model.ARCH_LABELS == {f: architecture(f).label for f in model.ARCHS}
    assert metadata.BASE_MODEL_VERSIONS == tuple(base_model_version(n) for n in names)
    assert session._ARCH_SIZES == {n: native_size(n) for n in names}
    assert CONFIG_FOLDERS == {n: architecture(n).config_folder for n in names}
    for folder in CONFIG_FOLDERS.values():  # each names a shipped config folder
        assert (configs_dir() / folder).is_dir(), folder


@pytest.mark.parametrize("name", list(EXPECTED))
def test_training_metadata_names_the_architecture_from_the_registry(name):
    meta = build_training_metadata(
        network_dim=4, network_alpha=2, base_model_version=base_model_version(name),
        base_model_name="base", resolution=native_size(name), steps=1, epochs=1,
        learning_rate=1e-4, unet_lr=None, text_encoder_lr=None, optimizer="AdamW",
        lr_scheduler="constant", seed=0, num_train_images=1, tag_frequency={},
        dataset_dirs=[], noise_offset=None, min_snr_gamma=None, mixed_precision="no",
        training_started_at=0.0, training_finished_at=0.0, title="t", trigger_phrase="")
    assert meta["modelspec.architecture"] == modelspec_architecture(name)
    assert meta["ss_v2"] == str(name in ("sd2", "sd2-v"))
    assert meta["modelspec.prediction_type"] == ("v" if name == "sd2-v" else "epsilon")
    assert meta["modelspec.implementation"] == architecture(name).lora_implementation


def test_lookups_read_kohya_spellings_and_refuse_unknown_names():
    assert arch_of_base_model_version("sdxl_base_v0-9") == "sdxl"
    assert arch_of_base_model_version("sd_v1_v") == "sd1"
    assert arch_of_base_model_version("sd_v2_768_v") == "sd2-v"
    assert arch_of_base_model_version("flux1") is None
    assert arch_of_base_model_version(None) is None
    assert arch_of_modelspec("stable-diffusion-v2-768-v") == "sd2-v"
    assert arch_of_modelspec("flux-1-dev/lora") is None
    with pytest.raises(ValueError, match="sd1, sd2, sd2-v, sdxl"):
        architecture("flux")
