"""LyCORIS kinds (issue 23): each module's update (`lycoris.delta_weight`) equals LyCORIS's
formula computed independently (tests/lycoris_files.py); files are read with their names,
arch, ranks and alphas; damaged ones are refused naming the module; `inspect` shows the kind
per module group; convert (plain LoRA files only) refuses them by name, and merge / resize
say what they need (a rank, the base model for DoRA; tests/core/test_merge_kinds.py merges)."""

from __future__ import annotations

import json

import pytest
import torch
from lycoris_files import diff, dora, loha, lokr
from safetensors.torch import save_file

from lora_studio.cli import main as cli_main
from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.formats import read_lora
from lora_studio.core.lora.inspect import inspect_lora
from lora_studio.core.lora.lycoris import LycorisFile, delta_bias, delta_weight, shape_problem
from lora_studio.core.lora.lycoris_read import network_from_state_dict, read_network
from lora_studio.core.lora.merge import merge_loras
from lora_studio.core.lora.model import LoraFile

STEM = "lora_unet_down_blocks_0_attentions_0_proj_in"
NAME = "unet.down_blocks.0.attentions.0.proj_in"
LINEAR, CONV3, CONV1 = (32, 48), (16, 8, 3, 3), (24, 12, 1, 1)

MAKERS = {
    "loha": (loha(), (LINEAR, CONV3, CONV1)),
    "loha_no_alpha": (loha(rank=3, alpha=None), (LINEAR, CONV3)),
    "loha_tucker": (loha(use_tucker=True), (CONV3,)),
    "lokr_full": (lokr(alpha=7.0), (LINEAR, CONV3, CONV1)),  # both full: alpha ignored
    "lokr_w2_factored": (lokr(w2="factored", rank=2, alpha=3.0), (LINEAR, CONV3)),
    "lokr_both_factored": (lokr(w1="factored", w2="factored", rank=3, alpha=4.0), (LINEAR,)),
    "lokr_w1_factored": (lokr(w1="factored", rank=2, alpha=5.0), (LINEAR,)),
    "lokr_tucker": (lokr(w2="tucker", rank=2, alpha=1.5), (CONV3,)),
    "lokr_no_alpha": (lokr(w2="factored", alpha=None), (LINEAR,)),
    "dora_out": (dora("out"), (LINEAR, CONV3, CONV1)),
    "dora_in": (dora("in"), (LINEAR, CONV3)),
    "dora_no_alpha": (dora("out", alpha=None), (LINEAR,)),
    "diff": (diff(), (LINEAR, CONV3)),
    "diff_no_bias": (diff(with_bias=False), (LINEAR,)),
}
CASES = [pytest.param(kind, shape, id=f"{kind}-{'x'.join(map(str, shape))}")
         for kind, (_, shapes) in MAKERS.items() for shape in shapes]


def _module(tensors: dict[str, torch.Tensor], stem: str = STEM):
    network = network_from_state_dict({f"{stem}.{k}": v for k, v in tensors.items()})
    assert isinstance(network, LycorisFile)
    (module,) = network.modules.values()
    return module


@pytest.mark.parametrize("kind, shape", CASES)
def test_update_is_lycoris_formula(kind, shape):
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(shape, generator=g)
    bias = torch.randn(shape[0], generator=g)
    made = MAKERS[kind][0](weight, bias, g)
    module = _module(made.tensors)
    torch.testing.assert_close(delta_weight(module, weight), made.delta, rtol=1e-4, atol=1e-5)
    if made.bias is None:
        assert delta_bias(module) is None
    else:
        torch.testing.assert_close(delta_bias(module), made.bias)
    assert shape_problem(module, shape) is None


def test_scale_rules():
    """alpha / rank; no alpha stored: 1; LoKr with both matrices full: 1 whatever the alpha,
    factored: alpha over the rank of the factored matrix."""
    r = torch.randn
    assert _module({"hada_w1_a": r(4, 2), "hada_w1_b": r(2, 6), "hada_w2_a": r(4, 2),
                    "hada_w2_b": r(2, 6), "alpha": torch.tensor(1.0)}).scale == 0.5
    assert _module({"hada_w1_a": r(4, 2), "hada_w1_b": r(2, 6), "hada_w2_a": r(4, 2),
                    "hada_w2_b": r(2, 6)}).scale == 1.0
    full = _module({"lokr_w1": r(2, 2), "lokr_w2": r(2, 3), "alpha": torch.tensor(8.0)})
    assert (full.scale, full.rank) == (1.0, None)
    factored = _module({"lokr_w1": r(2, 2), "lokr_w2_a": r(2, 4), "lokr_w2_b": r(4, 3),
                        "alpha": torch.tensor(2.0)})
    assert (factored.scale, factored.rank) == (0.5, 4)
    assert _module({"diff": r(4, 6), "diff_b": r(4)}).scale == 1.0


def test_peft_dora_magnitude_is_per_output_channel():
    """diffusers / PEFT naming: `lora_magnitude_vector` is [out] on a Linear and [1, out, 1, 1]
    on a conv, always one value per output channel."""
    g = torch.Generator().manual_seed(5)
    path = "down_blocks.0.attentions.0"
    tensors, expected = {}, {}
    for sub, shape in (("transformer_blocks.0.attn1.to_q", (32, 32)),
                       ("proj_in", (32, 32, 1, 1))):
        weight = torch.randn(shape, generator=g)
        made = dora("peft", alpha=None)(weight, None, g)
        key = f"unet.{path}.{sub}"
        tensors.update({f"{key}.lora_A.weight": made.tensors["lora_down.weight"],
                        f"{key}.lora_B.weight": made.tensors["lora_up.weight"],
                        f"{key}.lora_magnitude_vector": made.tensors["dora_scale"]})
        expected[f"unet.{path}.{sub}"] = weight, made.delta
    network = network_from_state_dict(tensors)
    assert (network.layout, network.kind) == ("diffusers", "DoRA")
    for name, (weight, delta) in expected.items():
        torch.testing.assert_close(delta_weight(network.modules[name], weight), delta,
                                   rtol=1e-4, atol=1e-5)


def test_a_dora_update_needs_the_base_weight():
    g = torch.Generator().manual_seed(1)
    made = dora("out")(torch.randn(LINEAR, generator=g), None, g)
    with pytest.raises(ValueError, match="base weight"):
        delta_weight(_module(made.tensors))


def test_names_arch_and_layout_are_read():
    r = torch.randn
    loha_parts = {"hada_w1_a": r(64, 2), "hada_w1_b": r(2, 64), "hada_w2_a": r(64, 2),
                  "hada_w2_b": r(2, 64)}
    stems = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q":
             "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
             "lora_unet_middle_block_2_out_layers_3": "unet.mid_block.resnets.1.conv2",
             "lora_te1_text_model_encoder_layers_0_self_attn_q_proj":
             "text_encoder.encoder.layers.0.self_attn.q_proj",
             "lora_te2_text_model_encoder_layers_1_mlp_fc2":
             "text_encoder_2.encoder.layers.1.mlp.fc2"}
    tensors = {f"{stem}.{k}": v for stem in stems for k, v in loha_parts.items()}
    network = network_from_state_dict(tensors)
    assert set(network.modules) == set(stems.values())
    assert (network.arch, network.layout, network.kind) == ("sdxl", "kohya", "LoHa")
    sd1 = network_from_state_dict({
        f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.{k}": v
        for k, v in {"lokr_w1": r(4, 4), "lokr_w2": r(8, 192)}.items()})
    assert (sd1.arch, sd1.kind) == ("sd1", "LoKr")  # cross-attention from 768 wide: SD 1.x
    plain = network_from_state_dict({f"{STEM}.lora_down.weight": r(2, 32),
                                     f"{STEM}.lora_up.weight": r(32, 2)})
    assert isinstance(plain, LoraFile)  # a plain LoRA goes the plain way


_R = torch.randn
DAMAGED = {
    "half_a_loha": ({"hada_w1_a": _R(32, 2), "hada_w1_b": _R(2, 32), "hada_w2_a": _R(32, 2)},
                    "has no hada_w2_b"),
    "tucker_without_t2": ({"hada_w1_a": _R(2, 8), "hada_w1_b": _R(2, 4), "hada_w2_a": _R(2, 8),
                           "hada_w2_b": _R(2, 4), "hada_t1": _R(2, 2, 3, 3)}, "has no hada_t2"),
    "lokr_without_w2": ({"lokr_w1": _R(4, 4)}, "has no lokr_w2"),
    "lokr_half_factored": ({"lokr_w1": _R(4, 4), "lokr_w2_a": _R(8, 2)}, "has no lokr_w2_b"),
    "mixed_kinds": ({"hada_w1_a": _R(32, 2), "hada_w1_b": _R(2, 32), "hada_w2_a": _R(32, 2),
                     "hada_w2_b": _R(2, 32), "lokr_w1": _R(4, 4), "lokr_w2": _R(8, 8)},
                    "mixes loha and lokr factors"),
    "factors_do_not_fit": ({"hada_w1_a": _R(32, 2), "hada_w1_b": _R(3, 32),
                            "hada_w2_a": _R(32, 2), "hada_w2_b": _R(2, 32)},
                           "factors of lora_unet_down_blocks_0_attentions_0_proj_in do not fit"),
    "dora_on_a_difference": ({"diff": _R(32, 32), "dora_scale": _R(32, 1)},
                             "dora_scale on a full difference"),
    "alpha_not_one_number": ({"diff": _R(32, 32), "alpha": torch.ones(3)}, "3 values"),
    "nan": ({"lokr_w1": torch.full((4, 4), float("nan")), "lokr_w2": _R(8, 8)},
            "has NaN in its lokr_w1"),
    "integers": ({"diff": torch.ones(32, 32, dtype=torch.int32)}, "int32"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_lycoris_file_is_refused_naming_the_problem(case, tmp_path):
    tensors, fragment = DAMAGED[case]
    path = tmp_path / f"{case}.safetensors"
    save_file({f"{STEM}.{k}": v for k, v in tensors.items()}, str(path))
    with pytest.raises(LoraFormatError) as info:
        read_network(path)
    assert fragment in str(info.value) and path.name in str(info.value)
    assert info.value.fix


def test_unsupported_kinds_and_keys_stay_refused(tmp_path):
    r = torch.randn
    cases = [({f"{STEM}.weight": r(32), f"{STEM}.on_input": torch.tensor(False),
               "lora_unet_x.diff": r(4, 4)}, "(IA)³"),
             ({f"{STEM}.lora_down.weight": r(2, 32, 1, 1), f"{STEM}.lora_up.weight": r(32, 2),
               f"{STEM}.lora_mid.weight": r(2, 2, 3, 3), f"{STEM}.dora_scale": r(32, 1)},
              "Tucker"),
             ({f"{STEM}.diff": r(32, 32), f"{STEM}.mystery": r(3)}, f"{STEM}.mystery"),
             ({f"unet.{NAME[5:]}.lora_magnitude_vector": r(32)}, "no lora_A / lora_B")]
    for index, (tensors, fragment) in enumerate(cases):
        path = tmp_path / f"{index}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(LoraFormatError, match=fragment.replace("(", r"\(")
                           .replace(")", r"\)")):
            read_network(path)


def test_shape_problem_names_what_does_not_fit():
    g = torch.Generator().manual_seed(2)
    module = _module(loha()(torch.randn(LINEAR, generator=g), None, g).tensors)
    assert shape_problem(module, (32, 64)) == "has 32x64 weights, the update is 32x48"
    conv = _module(lokr()(torch.randn(CONV3, generator=g), None, g).tensors)
    assert "the update is 16x8x3x3" in shape_problem(conv, (16, 72))
    dora_module = _module(dora("out")(torch.randn(LINEAR, generator=g), None, g).tensors)
    assert shape_problem(dora_module, (32, 48)) is None
    wide = network_from_state_dict({f"{STEM}.diff": torch.zeros(32, 48),
                                    f"{STEM}.diff_b": torch.zeros(16)}).modules[NAME]
    assert shape_problem(wide, (32, 48)) == "has 32 outputs, diff_b holds 16 values"


# ----------------------------------------------------------------------------- inspect
def _mixed_file(path):
    """UNet: two LoKr modules (full, and w2 factored at rank 2, alpha 1); text encoder: a
    LoHa (rank 4, alpha 2) and a DoRA module (rank 4, alpha 2)."""
    g = torch.Generator().manual_seed(9)
    parts = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q":
            lokr()(torch.randn(32, 32, generator=g), None, g),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj":
            lokr(w2="factored", rank=2, alpha=1.0)(torch.randn(256, 32, generator=g), None, g),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj":
            loha()(torch.randn(32, 32, generator=g), None, g),
        "lora_te_text_model_encoder_layers_0_mlp_fc1":
            dora("out")(torch.randn(64, 32, generator=g), None, g),
    }
    save_file({f"{stem}.{k}": v for stem, made in parts.items()
               for k, v in made.tensors.items()}, str(path),
              metadata={"ss_base_model_version": "sd_v1"})
    return path


def test_inspect_shows_the_kind_of_each_module_group(tmp_path, capsys):
    path = _mixed_file(tmp_path / "mixed.safetensors")
    info = inspect_lora(path)
    assert (info.kind, info.layout, info.arch, info.module_count) == \
        ("LoKr, DoRA, LoHa", "kohya", "sd1", 4)
    assert (info.ranks, info.alphas) == ([2, 4], [1.0, 2.0])
    assert info.groups == [
        {"component": "text_encoder", "kind": "DoRA", "modules": 1, "ranks": [4],
         "alphas": [2.0], "lokr_factors": []},
        {"component": "text_encoder", "kind": "LoHa", "modules": 1, "ranks": [4],
         "alphas": [2.0], "lokr_factors": []},
        {"component": "unet", "kind": "LoKr", "modules": 2, "ranks": [2], "alphas": [1.0],
         "lokr_factors": ["16x4 ⊗ 16x8", "4x4 ⊗ 8x8"]}]
    assert cli_main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "  kind:       LoKr, DoRA, LoHa, kohya layout" in text
    assert "  groups:     text encoder: 1 DoRA, rank 4, alpha 2" in text
    assert "              UNet: 2 LoKr, rank 2, alpha 1, factors 16x4 ⊗ 16x8, 4x4 ⊗ 8x8" in text
    assert cli_main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"] == info.groups


def test_inspect_of_a_full_difference_file(tmp_path, capsys):
    path = tmp_path / "diff.safetensors"
    save_file({f"{STEM}.diff": torch.zeros(32, 32, 1, 1), f"{STEM}.diff_b": torch.zeros(32)},
              str(path))
    info = inspect_lora(path)
    assert (info.kind, info.ranks, info.alphas, info.module_count) == \
        ("full-difference", [], [], 1)
    assert cli_main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "rank:       none (full matrices)" in text
    assert "groups:     UNet: 1 full-difference" in text


# ----------------------------------------------------------------------------- plain tools
def test_convert_refuses_a_lycoris_file_and_merge_says_what_it_needs(tmp_path, capsys):
    path = _mixed_file(tmp_path / "mixed.safetensors")
    with pytest.raises(LoraFormatError) as info:
        read_lora(path)
    message = str(info.value)
    assert message.startswith("mixed.safetensors is a LyCORIS LoHa file: convert re-saves plain "
                              "LoRA/LoCon files only")
    assert "lora-studio resize" in info.value.fix
    good = tmp_path / "good.safetensors"
    save_file({f"{STEM}.lora_down.weight": torch.randn(2, 32, 1, 1),
               f"{STEM}.lora_up.weight": torch.randn(32, 2, 1, 1)}, str(good))
    with pytest.raises(LoraFormatError, match="mixed.safetensors holds DoRA modules"):
        merge_loras([(good, 1.0), (path, 0.5)], rank=8)  # its DoRA update needs the model
    out = tmp_path / "out.safetensors"
    for argv, says in ((["convert", str(path), "--format", "diffusers", "--out", str(out)],
                        message),
                       (["merge", str(good), str(path), "--rank", "8", "--out", str(out)],
                        "mixed.safetensors holds DoRA modules"),
                       (["resize", str(path), "--rank", "2", "--out", str(out)],
                        "mixed.safetensors holds DoRA modules")):
        assert cli_main(argv) == 2, argv
        assert capsys.readouterr().err.startswith(f"error: {says}"), argv
        assert not out.exists()
