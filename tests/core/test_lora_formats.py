"""Reading and writing LoRA files: kohya and diffusers/PEFT layouts, real alphas, refusals of
other network kinds and damaged files, atomic saves."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.formats import lora_from_peft, read_lora, write_lora
from lora_studio.core.lora.model import LoraFile, LoraModule
from lora_studio.core.lora.naming import canonical_to_kohya, kohya_to_canonical
from lora_studio.core.lora.testing import attach_random_adapters


@pytest.fixture(scope="module")
def peft_pipe(tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    attach_random_adapters(pipe, rank=4, alpha=2.0, seed=0)
    return pipe


@pytest.fixture(scope="module")
def lora(peft_pipe) -> LoraFile:
    return lora_from_peft(peft_pipe.unet, peft_pipe.text_encoder, metadata={"ss_output_name": "star"})


def _assert_same_modules(a: LoraFile, b: LoraFile) -> None:
    assert set(a.modules) == set(b.modules)
    for name, module in a.modules.items():
        other = b.modules[name]
        assert torch.equal(module.down, other.down), name
        assert torch.equal(module.up, other.up), name
        assert module.alpha == other.alpha, name


def test_canonical_names_follow_diffusers_and_transformers(lora):
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" in lora.modules
    assert "unet.up_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj" in lora.modules
    assert "text_encoder.encoder.layers.0.self_attn.q_proj" in lora.modules
    assert {m.alpha for m in lora.modules.values()} == {2.0} and lora.ranks == {4}


def test_kohya_round_trip_is_exact_with_kohya_key_names(lora, tmp_path):
    path = write_lora(lora, tmp_path / "star.safetensors")
    tensors = load_file(str(path))
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert tensors[f"{stem}.lora_down.weight"].shape == (4, 32)
    assert tensors[f"{stem}.lora_up.weight"].shape == (32, 4)
    assert "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight" in tensors
    assert "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj.alpha" in tensors
    alpha = tensors["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"]
    assert alpha.dim() == 0 and alpha.item() == 2.0  # the real alpha, not the rank (4)
    assert len(tensors) == 3 * len(lora.modules)
    back = read_lora(path)
    assert back.layout == "kohya" and back.metadata["ss_output_name"] == "star"
    _assert_same_modules(lora, back)


def test_diffusers_layout_round_trip_keeps_the_strength(lora, tmp_path):
    path = write_lora(lora, tmp_path / "star_diffusers.safetensors", layout="diffusers")
    tensors = load_file(str(path))
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in tensors
    # transformers 4 names, as diffusers / ComfyUI / A1111 read them (not transformers 5's)
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight" in tensors
    back = read_lora(path)
    assert back.layout == "diffusers" and set(back.modules) == set(lora.modules)
    for name, module in lora.modules.items():
        assert torch.allclose(back.modules[name].delta_weight(), module.delta_weight(), atol=1e-6)


def test_reads_the_file_diffusers_itself_saves(peft_pipe, lora, tmp_path):
    """`save_lora_weights` + the LoraConfig metadata diffusers' trainers write (alpha 2, r 4)."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    StableDiffusionPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=get_peft_model_state_dict(peft_pipe.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(peft_pipe.text_encoder),
        unet_lora_adapter_metadata=peft_pipe.unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=peft_pipe.text_encoder.peft_config["default"].to_dict(),
    )
    back = read_lora(tmp_path / "pytorch_lora_weights.safetensors")
    assert back.layout == "diffusers"
    _assert_same_modules(lora, back)


def test_peft_file_without_alpha_metadata_means_alpha_equals_rank(peft_pipe, tmp_path):
    from peft.utils import get_peft_model_state_dict

    state = {f"base_model.model.{k}": v for k, v in get_peft_model_state_dict(peft_pipe.unet).items()}
    save_file(state, str(tmp_path / "adapter_model.safetensors"))
    back = read_lora(tmp_path / "adapter_model.safetensors")
    assert back.layout == "peft" and len(back.modules) == 48
    assert back.alphas == {4.0}
    assert all(name.startswith("unet.") for name in back.modules)


def test_mixed_ranks_and_alphas_survive_both_layouts(lora, tmp_path):
    modules = dict(lora.modules)
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v"
    modules[name] = LoraModule(torch.randn(8, 32), torch.randn(32, 8), alpha=1.0)
    mixed = LoraFile(modules)
    kohya = read_lora(write_lora(mixed, tmp_path / "k.safetensors"))
    assert kohya.modules[name].rank == 8 and kohya.modules[name].alpha == 1.0
    diff = read_lora(write_lora(mixed, tmp_path / "d.safetensors", layout="diffusers"))
    for key, module in mixed.modules.items():
        assert torch.allclose(diff.modules[key].delta_weight(), module.delta_weight(), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files_read_and_write(lora, tmp_path, dtype):
    path = write_lora(lora, tmp_path / "half.safetensors", dtype=dtype)
    assert {t.dtype for t in load_file(str(path)).values()} == {dtype}
    back = read_lora(path)
    name = "unet.down_blocks.0.attentions.0.proj_in"
    assert back.modules[name].down.dtype == dtype and back.modules[name].alpha == 2.0
    assert torch.allclose(back.modules[name].down.float(), lora.modules[name].down, atol=1e-2)


def test_locon_conv_keys_are_plain_lora(tmp_path):
    stem = "lora_unet_down_blocks_0_resnets_0_conv1"
    save_file({f"{stem}.lora_down.weight": torch.randn(4, 32, 3, 3),
               f"{stem}.lora_up.weight": torch.randn(32, 4, 1, 1),
               f"{stem}.alpha": torch.tensor(1.0)}, str(tmp_path / "locon.safetensors"))
    module = read_lora(tmp_path / "locon.safetensors").modules["unet.down_blocks.0.resnets.0.conv1"]
    assert module.rank == 4 and module.alpha == 1.0 and module.delta_weight().shape == (32, 32, 3, 3)


def test_kohya_names_round_trip_on_real_sd15_and_sdxl_unets():
    """Every Linear/Conv of the full-size UNets survives kohya flattening (SDXL via SGM names)."""
    from diffusers import UNet2DConditionModel

    from lora_studio.core.paths import configs_dir

    for arch, sdxl in (("sd15", False), ("sdxl", True)):
        config = json.loads((configs_dir() / arch / "unet" / "config.json").read_text())
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
        names = [f"unet.{n}" for n, m in unet.named_modules()
                 if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
        assert len(names) > 200
        for name in names:
            assert kohya_to_canonical(canonical_to_kohya(name, sdxl=sdxl))[0] == name
    assert canonical_to_kohya("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
                              sdxl=True) == "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    assert canonical_to_kohya("unet.mid_block.attentions.0.proj_in", sdxl=True) == \
        "lora_unet_middle_block_1_proj_in"
    assert canonical_to_kohya("text_encoder_2.encoder.layers.3.mlp.fc2", sdxl=True) == \
        "lora_te2_text_model_encoder_layers_3_mlp_fc2"


def test_sdxl_kohya_names_agree_with_diffusers_own_conversion():
    """Our SGM names (what kohya writes for SDXL) convert back the way diffusers converts them."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import convert_unet_state_dict_to_peft

    from lora_studio.core.paths import configs_dir

    config = json.loads((configs_dir() / "sdxl" / "unet" / "config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    names = {n for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
             and any(part in n for part in ("attentions", "resnets", "samplers"))}
    state = {}
    for name in names:
        stem = canonical_to_kohya(f"unet.{name}", sdxl=True)
        state[f"{stem}.lora_down.weight"] = state[f"{stem}.lora_up.weight"] = torch.zeros(1, 1)
    converted, _ = StableDiffusionXLPipeline.lora_state_dict(state, unet_config=unet.config)
    peft = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in converted.items()})
    assert {k.rsplit(".lora_", 1)[0] for k in peft} == names


def test_sdxl_lora_round_trips_through_kohya_sgm_names(tmp_path):
    modules = {
        "unet.down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k":
            LoraModule(torch.randn(4, 2048), torch.randn(1280, 4), 1.0),
        "text_encoder.encoder.layers.0.self_attn.q_proj":
            LoraModule(torch.randn(4, 768), torch.randn(768, 4), 1.0),
        "text_encoder_2.encoder.layers.0.mlp.fc1":
            LoraModule(torch.randn(4, 1280), torch.randn(5120, 4), 1.0),
    }
    path = write_lora(LoraFile(modules, arch="sdxl"), tmp_path / "xl.safetensors")
    keys = set(load_file(str(path)))
    assert "lora_unet_input_blocks_8_1_transformer_blocks_3_attn2_to_k.alpha" in keys
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight" in keys
    back = read_lora(path)
    assert back.arch == "sdxl"
    _assert_same_modules(LoraFile(modules), back)


# ----------------------------------------------------------------------------- refusals
def _save_keys(path, keys):
    save_file({k: torch.zeros(2, 2) for k in keys}, str(path))
    return path


@pytest.mark.parametrize("keys, kind", [
    (["lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a",
      "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_b"], "LoHa"),
    (["lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w1",
      "lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w2"], "LoKr"),
    (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
      "lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale"], "DoRA"),
    (["lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight"], "Tucker"),
])
def test_other_network_kinds_are_refused_by_name(tmp_path, keys, kind):
    path = _save_keys(tmp_path / "other.safetensors", keys)
    with pytest.raises(LoraFormatError, match=kind) as info:
        read_lora(path)
    assert "plain LoRA/LoCon" in str(info.value)  # read_lora: the plain-LoRA reader


def test_unknown_keys_are_listed(tmp_path):
    path = _save_keys(tmp_path / "odd.safetensors", ["lora_unet_x.lora_down.weight",
                                                      "lora_unet_x.lora_up.weight", "mystery.weight"])
    with pytest.raises(LoraFormatError, match="mystery.weight"):
        read_lora(path)


def test_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"PK\x03\x04 this is a zip/pickle checkpoint, not safetensors" * 4)
    with pytest.raises(LoraFormatError, match="not a safetensors file"):
        read_lora(path)


def test_truncated_file_is_refused(lora, tmp_path):
    path = write_lora(lora, tmp_path / "cut.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoraFormatError, match="truncated"):
        read_lora(path)
    path.write_bytes(data[:5])
    with pytest.raises(LoraFormatError, match="not a safetensors file"):
        read_lora(path)


def test_header_claiming_more_bytes_than_the_file_has_is_refused(tmp_path):
    path = tmp_path / "liar.safetensors"
    header = b'{"a.lora_down.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}'
    path.write_bytes(struct.pack("<Q", len(header) + 1000) + header + b"\0" * 16)
    with pytest.raises(LoraFormatError, match="truncated"):
        read_lora(path)


def test_failed_write_leaves_the_previous_file_intact(lora, tmp_path, monkeypatch):
    import safetensors.torch

    path = write_lora(lora, tmp_path / "keep.safetensors")
    before = path.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x10\x00\x00\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_lora(lora, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]
    _assert_same_modules(lora, read_lora(path))
