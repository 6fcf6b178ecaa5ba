"""resolve_model / load_pipeline: built-in tiny model, diffusers folders, the local hub cache."""

from __future__ import annotations

import json
import shutil

import pytest
from models_fixtures import component_mismatches, tiny_models  # noqa: F401

from lora_studio.core.errors import ModelLoadError
from lora_studio.core.models.loading import (
    ModelSource,
    load_components,
    load_pipeline,
    resolve_model,
)


def test_builtin_tiny_model_is_the_default(tiny_model_dir, monkeypatch):
    # (creating the built-in model on first use is covered in test_tiny_model.py)
    from lora_studio.core.models import tiny

    monkeypatch.setattr(tiny, "builtin_tiny_model_dir", lambda: tiny_model_dir)
    for spec in (None, "tiny", "builtin", " Tiny "):
        source = resolve_model(spec)
        assert (source.kind, source.arch, source.prediction_type, source.path) == (
            "builtin-tiny", "sd1", "epsilon", tiny_model_dir), spec


def test_diffusers_folders_report_their_architecture(tiny_models, tiny_model_dir,
                                                      tiny_vpred_model_dir):
    cases = [(tiny_model_dir, "sd1", "epsilon"), (tiny_vpred_model_dir, "sd2-v", "v_prediction")]
    cases += [(tiny_models[a].folder, a, p) for a, p in
              (("sd2", "epsilon"), ("sd2-v", "v_prediction"), ("sdxl", "epsilon"))]
    for folder, arch, prediction in cases:
        source = resolve_model(str(folder))
        assert (source.kind, source.arch, source.prediction_type, source.name) == (
            "diffusers-folder", arch, prediction, folder.name), folder


def test_folder_pipeline_is_offline_and_has_no_safety_checker(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None
    assert pipe.model_source.kind == "diffusers-folder"


def test_prediction_type_override_reaches_the_scheduler(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, prediction_type="v_prediction")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    parts = load_components(tiny_model_dir)
    assert parts.noise_scheduler.config.prediction_type == "epsilon"
    assert type(parts.noise_scheduler).__name__ == "DDPMScheduler"
    assert parts.unet is not None and parts.tokenizer is not None and parts.text_encoder_2 is None


def test_sdxl_components_include_both_text_encoders(tiny_models):
    import torch

    parts = load_components(tiny_models["sdxl"].folder, torch_dtype="bf16")
    assert parts.unet.dtype == torch.bfloat16 and parts.text_encoder_2.dtype == torch.bfloat16
    assert parts.source.arch == "sdxl"
    assert parts.text_encoder.config.hidden_size != parts.text_encoder_2.config.hidden_size
    assert parts.tokenizer_2.pad_token == "!"


def test_make_tiny_model_cli_writes_a_loadable_sdxl_model(tmp_path):
    from lora_studio.cli import main

    assert main(["make-tiny-model", str(tmp_path / "xl"), "--arch", "sdxl"]) == 0
    source = resolve_model(tmp_path / "xl")
    assert source.arch == "sdxl"
    unet = json.loads((tmp_path / "xl" / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time"


# -------------------------------------------------------------------------------- errors
def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "models" / "dreamshaper.safetensors"
    with pytest.raises(ModelLoadError) as err:
        resolve_model(str(missing))
    assert str(missing) in err.value.what and err.value.fix


def test_folder_without_model_index_is_explained(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ModelLoadError) as err:
        load_pipeline(tmp_path / "photos")
    assert "model_index.json" in err.value.what


def test_unknown_file_type_is_explained(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ModelLoadError) as err:
        resolve_model(notes)
    assert "notes.txt" in err.value.what and ".safetensors" in err.value.fix


# ----------------------------------------------------------------------------- hub cache
def _fake_hub_cache(root, repo_id, model_dir, *, weights=True):
    """The real huggingface_hub cache layout: blobs are files, snapshots hold the tree."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / sha
    shutil.copytree(model_dir, snapshot,
                    ignore=None if weights else shutil.ignore_patterns("*.safetensors"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    return snapshot


@pytest.mark.parametrize("env", ["HF_HUB_CACHE", "HF_HOME"])
def test_repo_id_loads_from_the_local_hub_cache(tiny_model_dir, tmp_path, monkeypatch, env):
    root = tmp_path / "hf"
    cache = root / "hub" if env == "HF_HOME" else root
    snapshot = _fake_hub_cache(cache, "tiny-org/tiny-sd", tiny_model_dir)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv(env, str(root))

    source = resolve_model("tiny-org/tiny-sd")
    assert (source.kind, source.arch, source.name, source.repo_id) == (
        "hub-cache", "sd1", "tiny-org/tiny-sd", "tiny-org/tiny-sd")
    assert source.path.resolve() == snapshot.resolve()
    pipe = load_pipeline("tiny-org/tiny-sd")
    mismatches = component_mismatches(pipe, load_pipeline(tiny_model_dir))
    assert mismatches and all(not bad for bad in mismatches.values())


def test_uncached_repo_id_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError) as err:
        load_pipeline("someone/not-downloaded")
    assert "someone/not-downloaded" in err.value.what
    assert "Download it once" in err.value.fix and "local" in err.value.fix


def test_repo_with_only_configs_cached_is_reported(tiny_model_dir, tmp_path, monkeypatch):
    _fake_hub_cache(tmp_path, "org/configs-only", tiny_model_dir, weights=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError) as err:
        resolve_model("org/configs-only")
    assert "unet" in err.value.what and "org/configs-only" in err.value.fix


def test_model_source_passes_through_and_can_be_overridden(tiny_model_dir):
    source = resolve_model(tiny_model_dir)
    assert isinstance(source, ModelSource)
    assert resolve_model(source) is source
    assert resolve_model(source, prediction_type="v").prediction_type == "v_prediction"


def test_cached_models_are_listed_without_loading_them(tiny_model_dir, tmp_path, monkeypatch):
    from lora_studio.core.models.hub_cache import list_cached_models

    _fake_hub_cache(tmp_path, "b-org/tiny-sd", tiny_model_dir)
    _fake_hub_cache(tmp_path, "A-org/other", tiny_model_dir)
    (tmp_path / "models--org--no-snapshot" / "refs").mkdir(parents=True)  # an aborted download
    (tmp_path / "datasets--org--data").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert list_cached_models() == ["A-org/other", "b-org/tiny-sd"]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "nowhere"))
    assert list_cached_models() == []
