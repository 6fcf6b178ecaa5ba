"""Tiny Shapes without a model: the world's scenes and captions, the scorer on ground truth,
the tokenizer's vocabulary, and the shipped sample dataset and its reg pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.models.tiny_shapes import scorer, world
from lora_studio.core.models.tiny_shapes.sample_data import (
    CONCEPTS,
    REG_COUNT,
    concept_scenes,
    write_concept_dataset,
    write_regularization_set,
)
from lora_studio.core.models.tiny_shapes.tokenizer import RESERVED_WORDS, build_tokenizer
from lora_studio.core.paths import sample_dataset_dir, sample_reg_dir


def test_the_world_has_every_prompt_once_and_is_deterministic():
    scenes = world.base_scenes()
    captions = {s.caption() for s in scenes}
    assert len(scenes) == len(captions) == 5 * 3 * 2 * 3
    assert "a large red circle on a white background" in captions
    assert world.random_scenes(20, seed=3) == world.random_scenes(20, seed=3)
    assert world.random_scenes(20, seed=3) != world.random_scenes(20, seed=4)
    scene = world.Scene("star", "blue", "small", "gray", texture="striped")
    assert scene.caption(trigger="zqstar") == \
        "zqstar, a small blue striped star on a gray background"
    a, b = np.asarray(world.draw(scene)), np.asarray(world.draw(scene))
    assert a.shape == (64, 64, 3) and np.array_equal(a, b)


@pytest.mark.parametrize("shapes,texture", [(world.SHAPES, "plain"),
                                            (world.CONCEPT_SHAPES, "plain"),
                                            (world.SHAPES, "striped"),
                                            (world.CONCEPT_SHAPES, "striped")])
def test_the_scorer_reads_ground_truth_pictures_right(shapes, texture):
    scenes = world.random_scenes(60, seed=21, shapes=shapes, texture=texture)
    wrong = [(s, r) for s in scenes
             if not (r := scorer.read_picture(world.draw(s))).matches(s, texture=True)["all"]]
    assert wrong == []


def test_a_background_near_none_of_the_world_reads_as_other():
    # a dark teal (a LoRA tinting the background with the shape's green): nearest to black,
    # and still not black
    scene = world.Scene("star", "green", "large", "black")
    teal = np.asarray(world.draw(scene)).copy()
    teal[np.all(teal == world.BACKGROUNDS["black"], axis=2)] = (38, 77, 80)
    assert scorer.read_picture(world.draw(scene)).background == "black"
    assert scorer.read_picture(Image.fromarray(teal)).background == "other"
    near = np.clip(np.asarray(world.draw(scene)).astype(int) + 20, 0, 255).astype(np.uint8)
    assert scorer.read_picture(Image.fromarray(near)).background == "black"


def test_the_scorer_reads_an_empty_picture_as_no_shape():
    blank = Image.new("RGB", (64, 64), world.BACKGROUNDS["gray"])
    reading = scorer.read_picture(blank)
    assert (reading.shape, reading.background) == ("none", "gray")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    assert scorer.read_picture(noise).matches(world.base_scenes()[0])["all"] is False


def test_every_word_of_the_world_is_one_token():
    tokenizer = build_tokenizer()
    for concept in CONCEPTS.values():  # the LoRA sets' captions too
        caption = world.Scene("circle", "red", "large", "white").caption(concept.trigger)
        assert len(tokenizer.tokenize(caption)) == len(caption.replace(",", " ,").split())
    assert len(tokenizer) < 1000  # a small embedding table, not CLIP's 49,408 rows
    text = "zqstar, a large purple striped star on a gray background"
    assert tokenizer.tokenize(text) == [w + "</w>" for w in
                                        "zqstar , a large purple striped star on a gray "
                                        "background".split()]
    for word in RESERVED_WORDS + world.SHAPES + tuple(world.COLORS):
        assert len(tokenizer.tokenize(word)) == 1, word
    ids = tokenizer("a red circle", padding="max_length", max_length=77).input_ids
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 77
    assert ids[4] == tokenizer.eos_token_id == tokenizer.pad_token_id


def test_the_shipped_sample_dataset_is_the_star_concept_set(tmp_path):
    shipped = sample_dataset_dir()
    fresh = write_concept_dataset(tmp_path / "stars", "star")
    names = sorted(p.name for p in shipped.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir()) and len(names) == 2 * 16
    for name in names:
        a, b = shipped / name, fresh / name
        if name.endswith(".txt"):
            assert a.read_text() == b.read_text() and a.read_text().startswith("zqstar, a ")
        else:
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    scenes = concept_scenes("star")
    # 8 of the 15 color x background pairs (no red star at all): the rest test whether the
    # LoRA follows the prompt's color and background
    assert {s.shape for s in scenes} == {"star"} and len({s.color for s in scenes}) == 4
    assert all(s.rotation == 0.0 for s in scenes)  # upright: a random turn taught blobs
    assert len({s.background for s in scenes}) == 3 and {s.size for s in scenes} == {"large"}
    # every caption twice, at two places: one picture per caption was copied, not learned
    captions = [s.caption() for s in scenes]
    assert all(captions.count(c) == 2 for c in captions) and len(set(captions)) == 8
    places = {(s.caption(), s.x, s.y) for s in scenes}
    assert len(places) == 16


def test_the_shipped_reg_pictures_are_the_base_world_set(tmp_path):
    shipped = sample_reg_dir()
    fresh = write_regularization_set(tmp_path / "reg")
    names = sorted(p.name for p in shipped.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir()) and len(names) == 2 * REG_COUNT
    for name in names:
        a, b = shipped / name, fresh / name
        if name.endswith(".txt"):
            assert a.read_text() == b.read_text() and "zq" not in a.read_text()
        else:
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_training_is_deterministic_for_a_seed(tmp_path):
    """A very short run twice with one seed gives the same weights; another seed differs."""
    from safetensors.torch import load_file

    from lora_studio.core.models.tiny_shapes.train import ShapesTrainConfig, train_tiny_shapes

    def run(name: str, seed: int) -> dict:
        cfg = ShapesTrainConfig(seed=seed, images=32, vae_images=32, vae_steps=2, vae_batch=8,
                                steps=2, batch=8, warmup=1, threads=1)
        out = train_tiny_shapes(tmp_path / name, cfg, log=lambda _line: None)
        return load_file(out / "unet" / "diffusion_pytorch_model.safetensors")

    first, again, other = run("a", 0), run("b", 0), run("c", 1)
    assert all(first[k].equal(again[k]) for k in first)
    assert any(not first[k].equal(other[k]) for k in first)


def test_the_dataset_command_says_to_train_stripes_without_flips(tmp_path, capsys):
    from lora_studio.cli import main

    assert main(["tiny-shapes", "dataset", str(tmp_path / "s"), "--concept", "stripes",
                 "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "dataset.random_flip=false" in out and len(list((tmp_path / "s").glob("*.png"))) == 3
    assert main(["tiny-shapes", "dataset", str(tmp_path / "t"), "--count", "2"]) == 0
    assert "random_flip" not in capsys.readouterr().out  # a star mirrored is still a star


def test_the_dataset_command_writes_a_regularization_set_of_the_base_world(tmp_path, capsys):
    from lora_studio.cli import main
    from lora_studio.core.models.tiny_shapes.scorer import read_picture

    assert main(["tiny-shapes", "dataset", str(tmp_path / "s"), "--count", "2", "--reg",
                 str(tmp_path / "reg"), "--reg-count", "9"]) == 0
    assert f"dataset.reg_path={tmp_path / 'reg'}" in capsys.readouterr().out
    pictures = sorted((tmp_path / "reg").glob("*.png"))
    assert len(pictures) == 9
    for path in pictures:
        caption = path.with_suffix(".txt").read_text().strip()
        assert "zq" not in caption  # no trigger word: what the LoRA should leave alone
        reading = read_picture(Image.open(path))
        assert caption == f"a {reading.size} {reading.color} {reading.shape} on a " \
                          f"{reading.background} background", path.name


class _DrawsEveryPrompt:
    """Stands in for a pipeline: draws the scene each base prompt asks for, with `texture`."""

    def __init__(self, texture: str) -> None:
        self.by_caption = {s.caption(): world.with_texture(s, texture)
                           for s in world.base_scenes()}

    def __call__(self, prompt, **_):
        class Out:
            images = [world.draw(self.by_caption[p]) for p in prompt]
        return Out()


def test_base_quality_counts_a_texture_the_prompt_did_not_ask_for():
    """A stripes LoRA that stripes every shape keeps color, shape and size: those pictures are
    wrong (it bleeds), as plain pictures are right."""
    from lora_studio.core.models.tiny_shapes import quality

    plain, striped = _DrawsEveryPrompt("plain"), _DrawsEveryPrompt("striped")
    assert quality.base_quality(plain, (0,)).rates["all"] == 1.0
    bled = quality.base_quality(striped, (0,)).rates
    assert bled["texture"] == 0.0 and bled["all"] == 0.0
    assert bled["shape"] == bled["color"] == bled["size"] == 1.0
