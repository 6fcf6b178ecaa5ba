"""preserve_base (differential output preservation): a LoRA that leaves prompts without its
trigger word as the base model draws them."""

from __future__ import annotations

import pytest
import torch

from lora_studio.core.errors import ConfigError
from lora_studio.core.train.data import without_trigger
from tests.core.test_train_loop import make_config, make_dataset, run


@pytest.mark.parametrize("caption, trigger, kept", [
    ("zqstar, a red star", "zqstar", "a red star"),
    ("a photo of ZQSTAR on a beach", "zqstar", "a photo of on a beach"),
    ("sks dog, ohwx, grass", "sks, ohwx", "dog, grass"),
    ("zqstar", "zqstar", ""),
    ("zqstars are not the trigger", "zqstar", "zqstars are not the trigger"),
    ("a photo of ohwx  woman, smiling", "ohwx woman", "a photo of, smiling"),
    ("ohwx woman, ohwx, a woman", "ohwx woman", "ohwx, a woman"),  # the phrase, not its words
])
def test_the_trigger_word_is_taken_out_of_captions(caption, trigger, kept):
    assert without_trigger(caption, trigger) == kept


def test_preserve_base_needs_a_trigger_word(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError) as err:
        make_config(tiny_model_dir, tmp_path, tmp_path / "out", train={"preserve_base": 1.0},
                    dataset={"trigger_word": ""}).validate()
    assert "train.preserve_base" in str(err.value)
    assert "trigger_word" in err.value.user_message()


def _lora_effect(model_dir, lora_path, captions) -> float:
    """Mean squared change the LoRA makes to the UNet's prediction for `captions` (fixed
    noisy latents and timesteps)."""
    from lora_studio.core.lora.apply import load_lora_into_pipeline
    from lora_studio.core.models.loading import load_pipeline
    from lora_studio.core.train.data import encode_text

    pipe = load_pipeline(model_dir)
    load_lora_into_pipeline(pipe, lora_path, "x")
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn((len(captions), 4, 4, 4), generator=gen)
    timesteps = torch.tensor([100, 400, 700, 900][:len(captions)])

    @torch.no_grad()
    def predict(weight: float) -> torch.Tensor:
        pipe.set_adapters(["x"], [weight])
        hidden = encode_text(pipe.tokenizer, pipe.text_encoder, captions)
        return pipe.unet(latents, timesteps, hidden).sample

    return float(((predict(1.0) - predict(0.0)) ** 2).mean())


@pytest.mark.parametrize("text_encoder", [False, True], ids=["unet", "unet+te"])
def test_preserve_base_keeps_prompts_without_the_trigger(tiny_model_dir, tmp_path,
                                                         text_encoder):
    data = make_dataset(tmp_path / "data")
    effects = {}
    for weight in (0.0, 3.0):
        cfg = make_config(tiny_model_dir, data, tmp_path / f"out{weight}",
                          dataset={"trigger_word": "zqstar"},
                          lora={"targets": "attention+mlp", "train_text_encoder": text_encoder},
                          train={"steps": 30, "learning_rate": 5e-3, "batch_size": 2,
                                 "preserve_base": weight})
        rec = run(cfg)
        assert rec.terminal.__class__.__name__ == "Finished", rec.events[-1]
        path = cfg.lora_path
        effects[weight] = {
            "without": _lora_effect(tiny_model_dir, path, ["red", "green", "blue", "yellow"]),
            "with": _lora_effect(tiny_model_dir, path, ["zqstar, red", "zqstar, green",
                                                        "zqstar, blue", "zqstar, yellow"])}
    plain, kept = effects[0.0], effects[3.0]
    # without the trigger the preserved LoRA changes far less than the plain one...
    assert kept["without"] < 0.5 * plain["without"], effects
    # ...while it still changes the trigger prompts (it learned, it is not switched off)
    assert kept["with"] > 2 * kept["without"], effects
