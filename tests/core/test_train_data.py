"""The latent / text cache is keyed by dataset index: a shuffled epoch never mixes up pairs."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline

from lora_studio.core.dataset.buckets import BucketSettings
from lora_studio.core.dataset.checks import check_dataset
from lora_studio.core.dataset.plan import plan_dataset
from lora_studio.core.train.data import DataOrder, TrainData, encode_text, latent_distribution
from lora_studio.core.train.families import Conditioning
from test_train_loop import make_dataset  # same folder (pytest puts it on sys.path)


def test_cache_entries_match_their_own_image_and_caption_through_shuffled_epochs(
        tiny_model_dir, tmp_path):
    report = check_dataset(make_dataset(tmp_path / "stars"), repeats=2)
    plan = plan_dataset(report, settings=BucketSettings(32, enabled=False), check_captions=False)
    examples = plan.examples()
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    data = TrainData(examples, dict(enumerate(plan.fits)), True, seed=5)
    data.cache_latents(pipe.vae, (False, True), batch_size=3)  # batches cross image boundaries
    data.cache_text(lambda captions: Conditioning(
        encode_text(pipe.tokenizer, pipe.text_encoder, captions)))
    order = DataOrder(examples, batch_size=1, seed=5, random_flip=True)

    epoch = [order.batch(b)[0].index for b in range(order.samples_per_epoch)]
    assert sorted(epoch) == sorted(list(range(4)) * 2) and epoch != sorted(epoch)  # shuffled
    assert [order.batch(b)[0].index for b in range(8, 16)] != epoch  # a new order each epoch
    samples = [order.batch(b)[0] for b in range(2 * order.samples_per_epoch)]
    with torch.no_grad():
        for sample in samples:
            i, flip = sample.index, sample.flip
            mean, std = latent_distribution(pipe.vae, data.pixels(i, flip).unsqueeze(0))
            cached_mean, cached_std = data.latents[(i, flip)]
            assert torch.allclose(cached_mean, mean, atol=1e-5)
            assert torch.allclose(cached_std, std, atol=1e-5)
            text = encode_text(pipe.tokenizer, pipe.text_encoder, [examples[i].caption])
            assert torch.allclose(data.text[i].hidden, text, atol=1e-5)
    # the captions really differ, so a mix-up would have been caught above
    assert not torch.allclose(data.text[0].hidden, data.text[1].hidden)
    assert {s.flip for s in samples} == {False, True}


def test_latents_are_cached_a_megapixel_per_vae_call():
    """One 1024 px image per VAE call, four at 512 px, at most eight small ones: the cache
    pass never needs more memory than encoding one image at SDXL's resolution."""
    from lora_studio.core.train.data import cache_batch_size

    assert [cache_batch_size(s, s) for s in (1024, 768, 512, 256, 32)] == [1, 1, 4, 8, 8]
    assert cache_batch_size(1216, 832) == 1 and cache_batch_size(640, 384) == 4
