"""A1111 LoRA cards (`<stem>.json`, issue 23): written beside every LoRA the studio trains or
exports, read back with a note (never an error) when a card is damaged, and never overwriting
what a person wrote in one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lora_studio.cli import main as cli_main
from lora_studio.core.lora.card import card_path, read_card, write_card

A1111_KEYS = {"description", "sd version", "activation text", "preferred weight",
              "negative text", "notes"}


def a1111_edit(lora: Path, **changes) -> None:
    """What A1111's card editor does on Save: read the object, set its keys, dump it whole."""
    path = card_path(lora)
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data.update({key if key.startswith("x_") else key.replace("_", " "): value
                 for key, value in changes.items()})
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False), encoding="utf-8")


def card_json(lora: Path) -> dict:
    return json.loads(card_path(lora).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- reading
def test_a_card_as_a1111_writes_it_is_read(tmp_path):
    lora = tmp_path / "ink.v2.safetensors"
    a1111_edit(lora, description="ink wash", sd_version="SD1", activation_text="inkwash style",
               preferred_weight=0.8, negative_text="photo", notes="best at 0.6-0.9")
    assert card_path(lora) == tmp_path / "ink.v2.json"  # the stem, as A1111's splitext
    found = read_card(lora)
    assert found.note is None
    card = found.card
    assert (card.description, card.sd_version, card.activation_text, card.weight,
            card.negative_text, card.notes) == ("ink wash", "SD1", "inkwash style", 0.8, "photo",
                                                "best at 0.6-0.9")
    a1111_edit(lora, preferred_weight=0)  # A1111: 0 means "unset"
    assert read_card(lora).card.weight is None
    a1111_edit(lora, preferred_weight="1.2")  # A1111 reads it with float()
    assert read_card(lora).card.weight == 1.2
    assert read_card(tmp_path / "none.safetensors").card is None
    assert read_card(tmp_path / "none.safetensors").note is None


@pytest.mark.parametrize("content, says", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"", "not valid JSON"),
])
def test_a_card_that_is_not_a_card_is_ignored_with_a_note(tmp_path, content, says):
    lora = tmp_path / "style.safetensors"
    card_path(lora).write_bytes(content)
    found = read_card(lora)
    assert found.card is None
    assert "style.json" in found.note and says in found.note


def test_keys_of_the_wrong_type_are_ignored_with_a_note_and_the_rest_is_used(tmp_path):
    lora = tmp_path / "style.safetensors"
    a1111_edit(lora, activation_text="zqstar", preferred_weight="heavy", notes=["a", "b"])
    found = read_card(lora)
    assert found.card.activation_text == "zqstar"
    assert (found.card.weight, found.card.notes) == (None, "")
    assert '"preferred weight" is not a number' in found.note
    assert '"notes" is not text' in found.note
    a1111_edit(lora, preferred_weight=float("nan"), notes="ok")
    assert read_card(lora).card.weight is None and "preferred weight" in read_card(lora).note


# ----------------------------------------------------------------------------- writing
def test_a_new_card_has_a1111s_keys_and_types(tmp_path):
    lora = tmp_path / "star.safetensors"
    assert write_card(lora, activation_text="zqstar", sd_version="SDXL") is None
    data = card_json(lora)
    assert A1111_KEYS <= set(data)
    assert (data["activation text"], data["sd version"], data["preferred weight"]) == \
        ("zqstar", "SDXL", 0)
    assert all(isinstance(data[k], str) for k in A1111_KEYS - {"preferred weight"})


def test_writing_again_keeps_what_a_person_wrote(tmp_path):
    lora = tmp_path / "star.safetensors"
    write_card(lora, activation_text="zqstar", sd_version="SD1")
    a1111_edit(lora, notes="my notes", description="a star", preferred_weight=0.7,
               negative_text="blurry", x_other="kept")
    write_card(lora, activation_text="zqstar2", sd_version="SD1")  # re-trained, new trigger
    data = card_json(lora)
    assert data["activation text"] == "zqstar2"  # ours, never edited: follows the training
    assert (data["notes"], data["description"], data["preferred weight"],
            data["negative text"], data["x_other"]) == ("my notes", "a star", 0.7, "blurry",
                                                          "kept")
    a1111_edit(lora, activation_text="zqstar2, sharp star")  # now the person owns it
    write_card(lora, activation_text="zqstar3", sd_version="SD2")
    data = card_json(lora)
    assert (data["activation text"], data["sd version"]) == ("zqstar2, sharp star", "SD2")


def test_an_a1111_card_fills_only_what_it_leaves_unset(tmp_path):
    lora = tmp_path / "star.safetensors"
    a1111_edit(lora, description="", sd_version="Unknown", activation_text="",
               preferred_weight=0, negative_text="", notes="from A1111")
    write_card(lora, activation_text="zqstar", sd_version="SD1")
    data = card_json(lora)
    assert (data["activation text"], data["sd version"], data["notes"]) == \
        ("zqstar", "SD1", "from A1111")
    a1111_edit(lora, sd_version="SDXL")  # chosen by hand: kept
    write_card(lora, activation_text="zqstar", sd_version="SD1")
    assert card_json(lora)["sd version"] == "SDXL"


def test_a_damaged_card_is_left_as_it_is(tmp_path):
    lora = tmp_path / "star.safetensors"
    card_path(lora).write_bytes(b'{"notes": "half a card')
    note = write_card(lora, activation_text="zqstar", sd_version="SD1")
    assert "star.json" in note and "left as it is" in note
    assert card_path(lora).read_bytes() == b'{"notes": "half a card'


# ----------------------------------------------------------------------------- exports
@pytest.fixture(scope="module")
def lora_files(tiny_model_dir, tmp_path_factory):
    from lora_studio.core.lora.formats import write_lora
    from lora_studio.core.lora.testing import make_random_lora

    folder = tmp_path_factory.mktemp("card_loras")
    lora = make_random_lora(tiny_model_dir, rank=4, alpha=2.0, seed=1)
    paths = []
    for name, trigger in (("star", "zqstar"), ("ink", "inkwash style")):
        path = folder / f"{name}.safetensors"
        write_lora(replace(lora, arch="sd1",  # filed as SD 1.x, as a real one would be
                           metadata={**lora.metadata, "modelspec.trigger_phrase": trigger}), path)
        paths.append(path)
    return paths


def test_convert_resize_and_merge_write_a_card_beside_the_new_file(lora_files, tmp_path,
                                                                  capsys):
    star, ink = lora_files
    a1111_edit(star, notes="star notes", preferred_weight=0.9, activation_text="zqstar, shiny")
    assert not card_path(ink).exists()
    converted, resized, merged = (tmp_path / f"{n}.safetensors" for n in
                                  ("converted", "resized", "merged"))
    assert cli_main(["convert", str(star), "--out", str(converted), "--format",
                     "diffusers"]) == 0
    assert cli_main(["resize", str(star), "--rank", "2", "--out", str(resized)]) == 0
    assert cli_main(["merge", f"{star}:0.5", f"{ink}:1", "--out", str(merged)]) == 0
    for path in (converted, resized):  # one source: its card travels with it
        data = card_json(path)
        assert (data["activation text"], data["notes"], data["preferred weight"],
                data["sd version"]) == ("zqstar, shiny", "star notes", 0.9, "SD1")
    data = card_json(merged)  # several: their activation texts, nothing else of theirs
    assert A1111_KEYS <= set(data)
    assert (data["activation text"], data["notes"], data["preferred weight"]) == \
        ("zqstar, shiny, inkwash style", "", 0)
    assert not card_path(ink).exists()  # the sources' cards are not touched


def test_a_trained_lora_gets_a_card_and_training_again_keeps_the_persons_edits(
        tiny_model_dir, tmp_path):
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.train.config import config_from_dict
    from lora_studio.core.train.trainer import run_training_job
    from PIL import Image

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for i, color in enumerate([(220, 40, 40), (40, 60, 220)]):
        Image.new("RGB", (32, 32), color).save(data_dir / f"img_{i}.png")
        (data_dir / f"img_{i}.txt").write_text("a star", encoding="utf-8")

    def train(trigger: str) -> Path:
        cfg = config_from_dict({
            "model": {"base": str(tiny_model_dir)},
            "dataset": {"path": str(data_dir), "resolution": 32, "trigger_word": trigger},
            "lora": {"rank": 2, "alpha": 2.0}, "train": {"steps": 1, "seed": 3},
            "output": {"path": str(tmp_path / "out"), "name": "star"}})
        run_training_job(cfg, lambda event: None, JobControl())
        return cfg.lora_path

    lora = train("zqstar")
    data = card_json(lora)
    assert A1111_KEYS <= set(data)
    assert (data["activation text"], data["sd version"]) == ("zqstar", "SD1")
    a1111_edit(lora, notes="trained on two squares", preferred_weight=0.75)
    assert train("zqstar2") == lora
    data = card_json(lora)
    assert (data["activation text"], data["notes"], data["preferred weight"]) == \
        ("zqstar2", "trained on two squares", 0.75)
