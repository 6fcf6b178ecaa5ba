"""Exports say which model a LoRA is for (issue 20): `convert`, `resize`, `merge` (the CLI
commands and the Mix tab's Export / Save merged call these same functions) write
`ss_base_model_version` / `ss_v2` / `modelspec.architecture` from the architecture read off the
weights when the input lacks them, never change what a file states, and a merge keeps its
inputs' tag frequencies and trigger phrases."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from lora_studio.core.lora import layouts
from lora_studio.core.lora.convert import convert_lora
from lora_studio.core.lora.formats import read_lora, write_lora
from lora_studio.core.lora.merge import merge_loras
from lora_studio.core.lora.metadata import with_architecture_keys
from lora_studio.core.lora.model import LoraFile, LoraModule
from lora_studio.core.lora.resize import resize_lora

# canonical module name -> (in, out); the cross-attention width tells the family
SHAPES = {
    "sd1": {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": (768, 32),
            "text_encoder.encoder.layers.0.self_attn.q_proj": (48, 48)},
    "sd2": {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": (1024, 32)},
    "sdxl": {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": (2048, 64),
             "text_encoder_2.encoder.layers.0.mlp.fc1": (64, 96)},
}
VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
SPEC = {"sd1": "stable-diffusion-v1/lora", "sd2": "stable-diffusion-v2-512/lora",
        "sdxl": "stable-diffusion-xl-v1-base/lora"}


def _lora(family: str, seed: int = 0, metadata: dict[str, str] | None = None) -> LoraFile:
    g = torch.Generator().manual_seed(seed)
    modules = {name: LoraModule(torch.randn(4, fan_in, generator=g),
                                torch.randn(fan_out, 4, generator=g), alpha=2.0)
               for name, (fan_in, fan_out) in SHAPES[family].items()}
    return LoraFile(modules=modules, metadata=dict(metadata or {}))


def _foreign_file(path, family: str, seed: int = 0, metadata: dict[str, str] | None = None):
    """A kohya file as another tool writes it: weights, and only the metadata given."""
    lora = _lora(family, seed)
    safetensors.torch.save_file(layouts.kohya_state_dict(lora), str(path),
                                metadata=dict(metadata or {}) or None)
    return path


def _header(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def _a1111_version(meta: dict[str, str]) -> str:
    """How AUTOMATIC1111 (extensions-builtin/Lora/network.py) files a LoRA."""
    if meta.get("ss_base_model_version", "").startswith("sdxl_"):
        return "SDXL"
    if meta.get("ss_v2") == "True":
        return "SD2"
    return "SD1" if meta else "Unknown"


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_convert_and_resize_say_what_model_a_bare_lora_is_for(tmp_path, family):
    src = _foreign_file(tmp_path / "bare.safetensors", family)
    assert read_lora(src).arch == family and not _header(src)
    outputs = [convert_lora(src, tmp_path / "k.safetensors", layout="kohya"),
               convert_lora(src, tmp_path / "d.safetensors", layout="diffusers"),
               write_lora(resize_lora(src, rank=2).lora, tmp_path / "r.safetensors")]
    for out in outputs:
        meta = _header(out)
        assert meta["ss_base_model_version"] == VERSION[family], out.name
        assert meta["modelspec.architecture"] == SPEC[family], out.name
        assert meta["modelspec.sai_model_spec"] == "1.0.0"
        assert _a1111_version(meta) == {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}[family]
        assert read_lora(out).arch == family


def test_a_merge_of_bare_loras_says_what_model_it_is_for(tmp_path):
    a = _foreign_file(tmp_path / "a.safetensors", "sdxl", seed=1)
    b = _foreign_file(tmp_path / "b.safetensors", "sdxl", seed=2)
    merged = merge_loras([(a, 0.8), (b, 0.5)])
    assert merged.lora.metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    meta = _header(write_lora(merged.lora, tmp_path / "m.safetensors", layout="diffusers"))
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert _a1111_version(meta) == "SDXL"


def test_what_a_file_states_is_kept(tmp_path):
    stated = {"ss_base_model_version": "sdxl_base_v0-9", "ss_v2": "False",
              "modelspec.architecture": "stable-diffusion-xl-v0-9-base/lora"}
    xl = _foreign_file(tmp_path / "xl09.safetensors", "sdxl", metadata=stated)
    v_pred = _foreign_file(tmp_path / "v.safetensors", "sd2",
                           metadata={"ss_base_model_version": "sd_v2_v"})
    for src in (xl, v_pred):
        given = _header(src)
        outputs = [convert_lora(src, tmp_path / f"c-{src.name}", layout="diffusers"),
                   write_lora(resize_lora(src, rank=2).lora, tmp_path / f"r-{src.name}"),
                   write_lora(merge_loras([(src, 1.0), (src, 0.5)]).lora,
                              tmp_path / f"m-{src.name}")]
        for out in outputs:
            meta = _header(out)
            assert {k: meta[k] for k in given} == given, out.name
    # what the file leaves out follows what it states: a v-prediction SD 2 LoRA is a 768-v one
    assert _header(tmp_path / "c-v.safetensors")["modelspec.architecture"] == \
        "stable-diffusion-v2-768-v/lora"


def test_the_helper_fills_only_missing_keys_and_nothing_for_an_unknown_model():
    assert with_architecture_keys({"x": "1"}, None) == {"x": "1"}
    assert with_architecture_keys({}, "flux") == {}
    filled = with_architecture_keys({"ss_base_model_version": "", "ss_v2": "False"}, "sd2")
    assert filled["ss_base_model_version"] == "sd_v2" and filled["ss_v2"] == "False"
    # an SD 2 LoRA (the file cannot tell epsilon from v) whose metadata says v
    v = with_architecture_keys({"modelspec.prediction_type": "v"}, "sd2")
    assert (v["ss_base_model_version"], v["modelspec.architecture"]) == (
        "sd_v2_v", "stable-diffusion-v2-768-v/lora")


def test_an_unknown_architecture_writes_no_architecture_keys(tmp_path):
    g = torch.Generator().manual_seed(0)
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # width says nothing
    lora = LoraFile({name: LoraModule(torch.randn(4, 32, generator=g),
                                      torch.randn(32, 4, generator=g), 1.0)})
    safetensors.torch.save_file(layouts.kohya_state_dict(lora), str(tmp_path / "u.safetensors"))
    assert read_lora(tmp_path / "u.safetensors").arch is None
    meta = _header(convert_lora(tmp_path / "u.safetensors", tmp_path / "o.safetensors"))
    assert not {"ss_base_model_version", "ss_v2", "modelspec.architecture"} & set(meta)


def test_a_merge_keeps_tag_frequencies_and_trigger_phrases(tmp_path):
    a = _foreign_file(tmp_path / "star.safetensors", "sd1", seed=1, metadata={
        "ss_tag_frequency": json.dumps({"10_star": {"zqstar": 10, "red hair": 3}}),
        "modelspec.trigger_phrase": "zqstar"})
    b = _foreign_file(tmp_path / "dog.safetensors", "sd1", seed=2, metadata={
        "ss_tag_frequency": json.dumps({"10_star": {"zqstar": 5}, "5_dog": {"dog": 5}}),
        "modelspec.trigger_phrase": "zqdog, zqstar"})
    c = _foreign_file(tmp_path / "odd.safetensors", "sd1", seed=3,
                      metadata={"ss_tag_frequency": "not json"})
    merged = merge_loras([(a, 1.0), (b, 0.7), (c, 0.2)]).lora
    meta = _header(write_lora(merged, tmp_path / "m.safetensors"))
    assert json.loads(meta["ss_tag_frequency"]) == {
        "10_star": {"zqstar": 15, "red hair": 3}, "5_dog": {"dog": 5}}
    assert meta["modelspec.trigger_phrase"] == "zqstar, zqdog"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    bare = merge_loras([(_foreign_file(tmp_path / "x.safetensors", "sd1"), 1.0)]).lora.metadata
    assert "ss_tag_frequency" not in bare and "modelspec.trigger_phrase" not in bare
