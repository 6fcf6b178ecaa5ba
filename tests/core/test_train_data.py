"""The latent / text cache is keyed by dataset index: a shuffled epoch never mixes up pairs."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline

from lora_studio.core.dataset.checks import check_dataset
from lora_studio.core.train.data import (DataOrder, Example, TrainData, encode_text,
                                         latent_distribution)
from test_train_loop import make_dataset  # same folder (pytest puts it on sys.path)


def test_cache_entries_match_their_own_image_and_caption_through_shuffled_epochs(
        tiny_model_dir, tmp_path):
    report = check_dataset(make_dataset(tmp_path / "stars"))
    examples = [Example(i, it.image_path, it.caption) for i, it in enumerate(report.items)]
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    data = TrainData(examples, 32, True, seed=5)
    data.cache_latents(pipe.vae, (False, True), batch_size=3)  # batches cross image boundaries
    data.cache_text(pipe.tokenizer, pipe.text_encoder)
    order = DataOrder(examples, repeats=2, seed=5, random_flip=True)

    epoch = [order.index_at(p) for p in range(order.epoch_length)]
    assert sorted(epoch) == sorted(list(range(4)) * 2) and epoch != sorted(epoch)  # shuffled
    assert [order.index_at(p) for p in range(8, 16)] != epoch  # a new order each epoch
    with torch.no_grad():
        for position in range(2 * order.epoch_length):
            i, flip = order.index_at(position), order.flip_at(position)
            mean, std = latent_distribution(pipe.vae, data.pixels(i, flip).unsqueeze(0))
            cached_mean, cached_std = data.latents[(i, flip)]
            assert torch.allclose(cached_mean, mean, atol=1e-5)
            assert torch.allclose(cached_std, std, atol=1e-5)
            text = encode_text(pipe.tokenizer, pipe.text_encoder, [examples[i].caption])
            assert torch.allclose(data.text[i], text, atol=1e-5)
    # the captions really differ, so a mix-up would have been caught above
    assert not torch.allclose(data.text[0], data.text[1])
    assert {f for p in range(16) for f in [order.flip_at(p)]} == {False, True}
