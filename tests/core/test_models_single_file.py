"""Single-file checkpoints: diffusers → original layout → back, detection, offline loading."""

from __future__ import annotations

import json

import pytest
import torch
from models_fixtures import ARCHS, component_mismatches, generate, tiny_models  # noqa: F401
from safetensors.torch import load_file, save_file

from lora_studio.core.errors import ModelLoadError
from lora_studio.core.models.loading import load_pipeline, resolve_model

EXPECTED_PREDICTION = {"sd1": "epsilon", "sd2": "epsilon", "sd2-v": "v_prediction",
                       "sdxl": "epsilon"}


@pytest.mark.parametrize("arch", ARCHS)
def test_single_file_round_trip_gives_identical_weights(tiny_models, arch):
    tiny = tiny_models[arch]
    keys = load_file(str(tiny.single_file)).keys()
    # the file really is in the original layout A1111 / ComfyUI read
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("first_stage_model.decoder.up.") for k in keys)
    te_prefix = {"sd1": "cond_stage_model.transformer.text_model.",
                 "sd2": "cond_stage_model.model.transformer.resblocks.",
                 "sd2-v": "cond_stage_model.model.transformer.resblocks.",
                 "sdxl": "conditioner.embedders.1.model.transformer.resblocks."}[arch]
    assert any(k.startswith(te_prefix) for k in keys)
    if arch != "sd1":
        assert any(k.endswith("attn.in_proj_weight") for k in keys)  # fused OpenCLIP q/k/v
    # the original VAE attention is made of 1x1 convolutions (A1111 / ComfyUI load it strictly)
    state = load_file(str(tiny.single_file))
    for name in ("q", "k", "v", "proj_out"):
        assert state[f"first_stage_model.decoder.mid.attn_1.{name}.weight"].ndim == 4

    source = resolve_model(tiny.single_file)
    assert (source.kind, source.arch, source.prediction_type) == (
        "single-file", arch, EXPECTED_PREDICTION[arch])
    assert source.name == tiny.single_file.stem

    pipe = load_pipeline(tiny.single_file, config_dir=tiny.config_dir)
    assert type(pipe).__name__ == ("StableDiffusionXLPipeline" if arch == "sdxl"
                                   else "StableDiffusionPipeline")
    assert pipe.scheduler.config.prediction_type == EXPECTED_PREDICTION[arch]
    mismatches = component_mismatches(pipe, tiny.reference_pipeline())
    assert mismatches and all(not bad for bad in mismatches.values()), mismatches


def test_sdxl_single_file_and_folder_generate_the_same_image(tiny_models):
    tiny = tiny_models["sdxl"]
    from_file = generate(load_pipeline(tiny.single_file, config_dir=tiny.config_dir))
    from_folder = generate(load_pipeline(tiny.folder))
    assert from_file.shape == (64, 64, 3)
    assert from_file.std() > 0  # a real picture, not a flat fill
    assert (from_file == from_folder).all()


def test_sd2_without_recorded_prediction_type_follows_diffusers_rule(tiny_models, tmp_path):
    # An SD2 file with no ModelSpec header and no v_pred marker: diffusers assumes v-prediction.
    state = {k: v for k, v in load_file(str(tiny_models["sd2"].single_file)).items()
             if k != "v_pred"}
    bare = tmp_path / "sd2-no-header.safetensors"
    save_file(state, str(bare))
    assert resolve_model(bare).arch == "sd2-v"
    # The caller can always say what it is.
    source = resolve_model(bare, prediction_type="epsilon")
    assert (source.arch, source.prediction_type) == ("sd2", "epsilon")
    pipe = load_pipeline(bare, prediction_type="epsilon", config_dir=tiny_models["sd2"].config_dir)
    assert pipe.scheduler.config.prediction_type == "epsilon"


def test_v_prediction_marker_is_honoured_without_a_header(tiny_models, tmp_path):
    state = load_file(str(tiny_models["sd2-v"].single_file))
    assert "v_pred" in state  # the exporter writes ComfyUI's marker for v models
    bare = tmp_path / "vpred.safetensors"
    save_file(state, str(bare))
    assert resolve_model(bare).prediction_type == "v_prediction"


def test_checkpoint_missing_the_vae_is_refused_not_half_loaded(tiny_models, tmp_path):
    tiny = tiny_models["sd1"]
    state = {k: v for k, v in load_file(str(tiny.single_file)).items()
             if not k.startswith("first_stage_model.")}
    partial = tmp_path / "no-vae.safetensors"
    save_file(state, str(partial))
    with pytest.raises(ModelLoadError) as err:
        load_pipeline(partial, config_dir=tiny.config_dir)
    assert "no VAE weights" in err.value.what and "complete checkpoint" in err.value.fix


def test_tiny_checkpoint_with_full_size_configs_gives_a_clear_error(tiny_models):
    # Without config_dir the shipped full-size SD1.5 configs are used: shapes cannot match.
    with pytest.raises(ModelLoadError) as err:
        load_pipeline(tiny_models["sd1"].single_file)
    assert tiny_models["sd1"].single_file.name in err.value.what
    assert "config folder" in err.value.fix


@pytest.mark.parametrize("content, expected", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, "LoRA"),
    ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3),
      "model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(1)},
     "inpainting"),
    ({"some.random.tensor": torch.zeros(3)}, "not a Stable Diffusion checkpoint"),
])
def test_files_that_are_not_base_models_are_named_as_such(tmp_path, content, expected):
    path = tmp_path / "thing.safetensors"
    save_file(content, str(path))
    with pytest.raises(ModelLoadError) as err:
        resolve_model(path)
    assert expected in err.value.what and "thing.safetensors" in err.value.what
    assert err.value.fix


def test_truncated_safetensors_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(ModelLoadError) as err:
        resolve_model(path)
    assert "cut.safetensors" in err.value.what and "download it again" in err.value.fix


# --------------------------------------------------------- full-size configs (meta tensors)
FULL_SIZE = {  # config folder → (arch, UNet parameters in millions, keys in the real file)
    "sd15": ("sd1", 859.5, 1131),
    "sd2": ("sd2", 865.9, None),
    "sd2-v": ("sd2", 865.9, None),
    "sdxl": ("sdxl", 2567.5, 2515),
}


@pytest.mark.parametrize("folder", list(FULL_SIZE))
def test_shipped_full_size_configs_export_the_real_checkpoint_layout(folder):
    """Built on the meta device (no memory): the exporter's keys for the real-size models match
    real SD checkpoints, diffusers recognises them, and its importer maps them back exactly."""
    import diffusers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
        infer_diffusers_model_type,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lora_studio.core.models.architecture import detect_checkpoint_arch
    from lora_studio.core.models.original_layout import pipeline_to_original_state_dict
    from lora_studio.core.paths import configs_dir

    arch, unet_millions, real_keys = FULL_SIZE[folder]
    d = configs_dir() / folder
    sched_cfg = json.loads((d / "scheduler" / "scheduler_config.json").read_text())

    class Pipe:  # just the attributes the exporter reads
        pass

    pipe = Pipe()
    with init_empty_weights():
        pipe.unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(d / "unet"))
        pipe.vae = AutoencoderKL.from_config(AutoencoderKL.load_config(d / "vae"))
        pipe.text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(d / "text_encoder"))
        pipe.text_encoder_2 = (CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(d / "text_encoder_2")) if arch == "sdxl" else None)
    pipe.scheduler = getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)

    assert round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 1) == unet_millions
    state = pipeline_to_original_state_dict(pipe)
    if real_keys:
        assert len(state) == real_keys
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert detect_checkpoint_arch(shapes) == arch
    assert infer_diffusers_model_type(state) == {"sd1": "v1", "sd2": "v2", "sdxl": "xl_base"}[arch]

    for module, back in ((pipe.unet, convert_ldm_unet_checkpoint(state, dict(pipe.unet.config))),
                         (pipe.vae, convert_ldm_vae_checkpoint(state, dict(pipe.vae.config)))):
        want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in back.items()} == want
    if arch == "sd2":
        te_back = convert_open_clip_checkpoint(pipe.text_encoder, state)
        te_back = {k.removeprefix("text_model."): tuple(v.shape) for k, v in te_back.items()}
        want = {k: tuple(v.shape) for k, v in pipe.text_encoder.state_dict().items()}
        assert te_back == want
        # the unused 24th OpenCLIP block is present, as in the original SD 2 files
        assert "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight" in state
        assert ("v_pred" in state) == (folder == "sd2-v")


def test_shipped_sd2_configs_describe_sd21():
    from transformers import CLIPTextConfig, CLIPTokenizer

    from lora_studio.core.paths import configs_dir

    for folder, prediction, side in (("sd2", "epsilon", 512), ("sd2-v", "v_prediction", 768)):
        d = configs_dir() / folder
        te = CLIPTextConfig.from_pretrained(d / "text_encoder")
        assert (te.hidden_size, te.num_hidden_layers, te.num_attention_heads, te.hidden_act,
                te.intermediate_size, te.projection_dim) == (1024, 23, 16, "gelu", 4096, 512)
        sched = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
        assert sched["prediction_type"] == prediction
        unet = json.loads((d / "unet" / "config.json").read_text())
        assert unet["sample_size"] * 8 == side
        tok = CLIPTokenizer.from_pretrained(d / "tokenizer")
        assert tok.pad_token == "!" and tok.model_max_length == 77
        assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
