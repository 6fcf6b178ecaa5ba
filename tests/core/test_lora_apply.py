"""LoRA strength is exact across our files, plain diffusers and our loader; bad LoRAs are
refused with the pipeline left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_studio.core.errors import LoraFormatError
from lora_studio.core.lora.apply import load_lora_into_pipeline
from lora_studio.core.lora.formats import lora_from_peft, read_lora, write_lora
from lora_studio.core.lora.model import LoraFile, LoraModule
from lora_studio.core.lora.testing import attach_random_adapters
from tiny_pipeline import render, tiny_pipe



@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A peft adapter (r=4, alpha=2) on a pipeline, its image, and the base image."""
    pipe = tiny_pipe(tiny_model_dir)
    base = render(pipe)
    attach_random_adapters(pipe, rank=4, alpha=2.0, seed=0)
    lora = lora_from_peft(pipe.unet, pipe.text_encoder)
    folder = tmp_path_factory.mktemp("apply")
    return {"lora": lora, "peft_image": render(pipe), "base_image": base, "dir": folder}


@pytest.fixture(scope="module")
def fresh_pipe(tiny_model_dir):
    """One pipeline without LoRAs, shared by the refusal tests (each checks it stays clean)."""
    pipe = tiny_pipe(tiny_model_dir)
    return pipe, render(pipe)


def _close(a, b) -> bool:
    return float(np.abs(a - b).max()) < 1e-4


def test_lora_changes_the_image_clearly(trained):
    assert np.abs(trained["peft_image"] - trained["base_image"]).mean() > 0.01


def test_kohya_file_in_plain_diffusers_matches_the_trained_adapter(trained, tiny_model_dir):
    path = write_lora(trained["lora"], trained["dir"] / "kohya.safetensors")
    pipe = tiny_pipe(tiny_model_dir)
    pipe.load_lora_weights(str(path), adapter_name="style")
    assert _close(render(pipe), trained["peft_image"])


def test_diffusers_layout_file_in_plain_diffusers_matches(trained, tiny_model_dir):
    path = write_lora(trained["lora"], trained["dir"] / "diffusers.safetensors", layout="diffusers")
    pipe = tiny_pipe(tiny_model_dir)
    pipe.load_lora_weights(str(path), adapter_name="style")
    assert _close(render(pipe), trained["peft_image"])


def test_our_loader_matches_and_reports_every_module(trained, tiny_model_dir):
    path = write_lora(trained["lora"], trained["dir"] / "ours.safetensors")
    pipe = tiny_pipe(tiny_model_dir)
    report = load_lora_into_pipeline(pipe, path, "style")
    # 4 transformer blocks x 12 layers in the tiny UNet + 2 CLIP layers x 6
    assert (report.matched, report.unmatched, report.total) == (60, [], 60)
    assert report.adapter_name == "style" and "style" in pipe.get_list_adapters()["unet"]
    assert _close(render(pipe), trained["peft_image"])


def test_alpha_equal_to_rank_would_give_a_different_image(trained, tiny_model_dir):
    """The check above would catch a loader or writer that assumes alpha = rank."""
    lora = trained["lora"]
    wrong = LoraFile({k: LoraModule(m.down, m.up, float(m.rank)) for k, m in lora.modules.items()})
    pipe = tiny_pipe(tiny_model_dir)
    load_lora_into_pipeline(pipe, wrong, "wrong")
    assert np.abs(render(pipe) - trained["peft_image"]).mean() > 0.01


def _sdxl_lora() -> LoraFile:
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for stem, fan_in, fan_out in [
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 640, 640),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048, 640),
        ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
        ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280),
    ]:
        tensors[f"{stem}.lora_down.weight"] = torch.randn(4, fan_in, generator=g)
        tensors[f"{stem}.lora_up.weight"] = torch.randn(fan_out, 4, generator=g)
        tensors[f"{stem}.alpha"] = torch.tensor(4.0)
    return tensors


def _assert_untouched(pipe, image):
    assert not any(pipe.get_list_adapters().values())
    assert _close(render(pipe), image)


def test_sdxl_lora_is_refused_on_an_sd1_model(fresh_pipe, tmp_path):
    from safetensors.torch import save_file

    pipe, image = fresh_pipe
    path = tmp_path / "sdxl.safetensors"
    save_file(_sdxl_lora(), str(path))
    assert read_lora(path).arch == "sdxl"
    with pytest.raises(LoraFormatError, match="made for SDXL, this model is SD 1.x"):
        load_lora_into_pipeline(pipe, path, "xl")
    _assert_untouched(pipe, image)


def test_wrong_sizes_are_refused_as_another_architecture(fresh_pipe, trained):
    pipe, image = fresh_pipe
    name = next(k for k in trained["lora"].modules if k.endswith("attn2.to_k"))
    module = LoraModule(torch.randn(4, 768), torch.randn(32, 4), 4.0)  # SD 1.5 width
    with pytest.raises(LoraFormatError, match="different architecture"):
        load_lora_into_pipeline(pipe, LoraFile({name: module}), "wide")
    _assert_untouched(pipe, image)


def test_lora_matching_nothing_is_refused(fresh_pipe):
    pipe, image = fresh_pipe
    lora = LoraFile({"unet.no_such_block.0.to_q": LoraModule(torch.randn(4, 32), torch.randn(32, 4), 2.0)})
    with pytest.raises(LoraFormatError, match="fits none"):
        load_lora_into_pipeline(pipe, lora, "nothing")
    _assert_untouched(pipe, image)


def test_partial_match_is_reported(fresh_pipe, trained):
    pipe, image = fresh_pipe
    modules = dict(trained["lora"].modules)
    modules["unet.no_such_block.0.to_q"] = LoraModule(torch.randn(4, 32), torch.randn(32, 4), 2.0)
    report = load_lora_into_pipeline(pipe, LoraFile(modules), "partial")
    try:
        assert report.matched == 60 and report.unmatched == ["unet.no_such_block.0.to_q"]
        assert report.total == 61 and not report.fully_matched
        assert not _close(render(pipe), image)
    finally:
        pipe.delete_adapters("partial")
    _assert_untouched(pipe, image)


def test_second_lora_loads_after_a_first_and_after_a_removal(trained, tiny_model_dir):
    """Stacking: once a layer holds a LoRA, peft wraps it; the next LoRA must still be checked
    against the real layer inside (and so after delete_adapters, which keeps the wrapper)."""
    path = write_lora(trained["lora"], trained["dir"] / "stack.safetensors")
    pipe = tiny_pipe(tiny_model_dir)
    load_lora_into_pipeline(pipe, path, "first")
    second = load_lora_into_pipeline(pipe, path, "second")
    assert (second.matched, second.unmatched) == (60, [])
    pipe.delete_adapters(["first", "second"])
    third = load_lora_into_pipeline(pipe, path, "third")
    assert third.matched == 60
    pipe.set_adapters(["third"], [1.0])
    assert _close(render(pipe), trained["peft_image"])
