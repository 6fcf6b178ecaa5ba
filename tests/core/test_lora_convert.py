"""`lora-studio convert`: kohya <-> diffusers, every module's update and the metadata kept."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.convert import convert_lora
from lora_studio.core.lora.formats import read_lora, write_lora
from lora_studio.core.lora.model import LoraFile, LoraModule

NAMES = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (32, 32, None),
         "unet.down_blocks.0.resnets.0.conv1": (32, 32, 3),
         "text_encoder.encoder.layers.0.self_attn.q_proj": (48, 48, None)}


@pytest.fixture
def lora() -> LoraFile:
    """alpha 2 != rank 8 (the scale 0.25 must survive), fp16, a conv and a text-encoder module."""
    g = torch.Generator().manual_seed(0)
    modules = {}
    for name, (fan_in, fan_out, k) in NAMES.items():
        shape_in = (8, fan_in) if k is None else (8, fan_in, k, k)
        shape_up = (fan_out, 8) if k is None else (fan_out, 8, 1, 1)
        modules[name] = LoraModule(torch.randn(*shape_in, generator=g).half(),
                                   torch.randn(*shape_up, generator=g).half(), alpha=2.0)
    return LoraFile(modules=modules, arch="sd1", metadata={
        "modelspec.trigger_phrase": "zqstar", "ss_network_alpha": "2", "ss_output_name": "star"})


def _assert_same_updates(a: LoraFile, b: LoraFile) -> None:
    assert set(a.modules) == set(b.modules)
    for name, module in a.modules.items():
        assert b.modules[name].delta_weight().float().allclose(
            module.delta_weight().float(), atol=2e-3), name


@pytest.mark.parametrize("first,second", [("kohya", "diffusers"), ("diffusers", "kohya")])
def test_round_trip_keeps_updates_and_metadata(lora, tmp_path, first, second):
    src = write_lora(lora, tmp_path / "src.safetensors", layout=first)
    mid = convert_lora(src, tmp_path / "mid.safetensors", layout=second)
    back = convert_lora(mid, tmp_path / "back.safetensors", layout=first)
    converted = read_lora(mid)
    assert converted.layout == second and read_lora(back).layout == first
    assert converted.metadata["modelspec.trigger_phrase"] == "zqstar"
    assert converted.metadata["ss_network_alpha"] == "2"
    _assert_same_updates(lora, converted)
    _assert_same_updates(lora, read_lora(back))
    if first == "kohya":  # a kohya file keeps each module's literal alpha...
        assert {m.alpha for m in read_lora(src).modules.values()} == {2.0}
    # ...the diffusers layout folds alpha/rank into lora_B (exact in every loader), so a file
    # that went through it says alpha = rank; the strength above is what is preserved.


def test_bad_targets_are_refused_and_the_cli_runs(lora, tmp_path):
    src = write_lora(lora, tmp_path / "star.safetensors")
    with pytest.raises(LoraFormatError, match="safetensors"):
        convert_lora(src, tmp_path / "star.ckpt", layout="diffusers")
    with pytest.raises(LoraFormatError, match="Unknown LoRA layout"):
        convert_lora(src, tmp_path / "x.safetensors", layout="lycoris")
    out = tmp_path / "star_diffusers.safetensors"
    run = subprocess.run([sys.executable, "-m", "lora_studio", "convert", str(src), "--format",
                          "diffusers", "--out", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "diffusers layout" in run.stdout
    _assert_same_updates(lora, read_lora(out))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    run = subprocess.run([sys.executable, "-m", "lora_studio", "convert",
                          str(tmp_path / "junk.safetensors"), "--format", "kohya", "--out",
                          str(tmp_path / "y.safetensors")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2 and "junk.safetensors" in run.stderr
    assert not (tmp_path / "y.safetensors").exists()
