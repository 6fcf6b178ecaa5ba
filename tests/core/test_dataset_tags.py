"""Bulk tag edits on caption files: each operation, selection, undo, dry run, nothing-to-do."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from dataset_fixtures import CAT_FOLDER, COFFEE_CAPTION, COFFEE_FOLDER, make_kohya_folder
from PIL import Image

from lora_studio.cli import main
from lora_studio.core.dataset import tags as t
from lora_studio.core.dataset.checks import check_dataset
from lora_studio.core.errors import DatasetError

CAPTIONS = {"a": "1girl, solo, red hair", "b": "1girl,Red Hair,  smile", "c": "landscape, sky"}


def make_folder(root: Path, captions: dict[str, str | None] = CAPTIONS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for stem, caption in captions.items():
        Image.new("RGB", (64, 64), (90, 120, 200)).save(root / f"{stem}.png")
        if caption is not None:
            (root / f"{stem}.txt").write_bytes(caption.encode("utf-8"))
    return root


def targets_of(folder: Path) -> list[t.CaptionTarget]:
    return t.targets_from_report(check_dataset(folder))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def apply(changes) -> dict[str, str]:
    t.apply_changes(changes)
    return {c.image_path.stem: c.path.read_text(encoding="utf-8") for c in changes}


def test_add_refuses_captions_that_have_the_tag_unless_where_missing(tmp_path):
    targets = targets_of(make_folder(tmp_path))
    with pytest.raises(DatasetError) as caught:
        t.add_tag(targets, "red hair")
    assert "2 of the 3 captions already have 'red hair' (a.png, b.png)" in caught.value.what
    assert "--where-missing" in caught.value.fix
    assert apply(t.add_tag(targets, "Red hair", where_missing=True)) == {
        "c": "landscape, sky, Red hair"}
    assert apply(t.add_tag(targets, "outdoors")) == {
        "a": "1girl, solo, red hair, outdoors", "b": "1girl, Red Hair, smile, outdoors",
        "c": "landscape, sky, Red hair, outdoors"}


def test_remove_is_case_insensitive_and_keeps_the_order_of_the_rest(tmp_path):
    targets = targets_of(make_folder(tmp_path))
    assert apply(t.remove_tag(targets, " RED HAIR ")) == {"a": "1girl, solo",
                                                         "b": "1girl, smile"}
    assert (tmp_path / "c.txt").read_text() == "landscape, sky"  # untouched


def test_replace_puts_the_new_tag_in_place_without_making_a_duplicate(tmp_path):
    folder = make_folder(tmp_path, {"a": "red hair, 1girl, long hair",
                                    "b": "long hair, smile, Red Hair", "c": "sky"})
    changes = t.replace_tag(targets_of(folder), "red hair", "long hair")
    assert apply(changes) == {"a": "long hair, 1girl", "b": "long hair, smile"}
    assert [c.old_text for c in changes] == ["red hair, 1girl, long hair",
                                             "long hair, smile, Red Hair"]


def test_trigger_is_put_first_only_where_it_is_missing(tmp_path):
    folder = make_folder(tmp_path, {"a": "1girl, zqchar", "b": "ZQCHAR, smile", "c": "sky"})
    assert apply(t.add_trigger(targets_of(folder), "zqchar")) == {"c": "zqchar, sky"}


def test_missing_lists_the_images_that_lack_a_tag(tmp_path):
    targets = targets_of(make_folder(tmp_path))
    assert [x.image_path.name for x in t.missing_tag(targets, "red hair")] == ["c.png"]
    assert [x.image_path.name for x in t.missing_tag(targets, "1GIRL")] == ["c.png"]


def test_a_tag_with_a_comma_or_nothing_in_it_is_refused(tmp_path):
    targets = targets_of(make_folder(tmp_path))
    for bad in ("", "  ", "red, hair"):
        with pytest.raises(DatasetError):
            t.remove_tag(targets, bad)


def test_selection_edits_only_the_named_images(tmp_path):
    folder = make_folder(tmp_path)
    targets = targets_of(folder)
    chosen = t.select(targets, ["b.png", folder / "c.png"])
    assert [x.image_path.name for x in chosen] == ["b.png", "c.png"]
    assert apply(t.add_tag(chosen, "blue", where_missing=True)) == {
        "b": "1girl, Red Hair, smile, blue", "c": "landscape, sky, blue"}
    assert (folder / "a.txt").read_text() == CAPTIONS["a"]
    with pytest.raises(DatasetError, match="nothere.png is not a usable image"):
        t.select(targets, ["nothere.png"])


def test_an_operation_that_changes_nothing_writes_nothing(tmp_path):
    folder = make_folder(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in folder.glob("*.txt")}
    # "1girl,Red Hair,  smile" is spaced unevenly, but its tags stay: it is not rewritten.
    targets = targets_of(folder)
    girls = t.select(targets, ["a.png", "b.png"])
    for changes in (t.remove_tag(targets, "blonde"),
                    t.replace_tag(targets, "blonde", "brown hair"),
                    t.add_trigger(girls, "1girl"),
                    t.add_tag(girls, "red hair", where_missing=True)):
        assert changes == []
        t.apply_changes(changes)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.txt")} == before


def test_undo_restores_every_byte_and_deletes_created_files(tmp_path):
    train = make_kohya_folder(tmp_path)
    cat = train / CAT_FOLDER
    os.chmod(cat / "chelsea.txt", 0o640)
    before = snapshot(train)
    changes = t.add_trigger(t.targets_from_report(check_dataset(train)), "zqcat")
    by_image = {c.image_path.name: c for c in changes}
    assert set(by_image) == {"chelsea.jpg", "rocket.jpg", "coffee.jpg", "hubble_9x16.jpg",
                             "long caption.jpg"}
    t.apply_changes(changes)

    # rocket.jpg had no caption file: it trained with its kohya class, and still does.
    assert by_image["rocket.jpg"].created
    assert (cat / "rocket.txt").read_text(encoding="utf-8") == "zqcat, chelsea cat"
    # The Windows-1252 caption is written back as UTF-8, keeping its CRLF ending.
    coffee = by_image["coffee.jpg"]
    assert coffee.converted and not by_image["chelsea.jpg"].converted
    assert (train / COFFEE_FOLDER / "coffee.txt").read_bytes() == \
        f"zqcat, {COFFEE_CAPTION}\r\n".encode()
    assert (train / COFFEE_FOLDER / "hubble_9x16.txt").read_bytes() == b"zqcat"
    assert stat.S_IMODE((cat / "chelsea.txt").stat().st_mode) == 0o640  # mode kept

    t.undo(changes)
    assert snapshot(train) == before
    assert not (cat / "rocket.txt").exists()
    assert stat.S_IMODE((cat / "chelsea.txt").stat().st_mode) == 0o640


# ------------------------------------------------------------------ the command line
def test_cli_dry_run_prints_the_changes_and_writes_nothing(tmp_path, capsys):
    train = make_kohya_folder(tmp_path)
    before = snapshot(train)
    assert main(["dataset", "tags", str(train), "trigger", "zqcat", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert snapshot(train) == before
    assert f'{train / CAT_FOLDER / "rocket.txt"}: +"zqcat"  (new file: "zqcat, chelsea cat")' \
        in out
    assert "was Windows-1252, written as UTF-8" in out
    assert "Dry run: 5 of 5 caption files would change; nothing was written." in out


def test_cli_edits_a_selection_and_lists_what_lacks_a_tag(tmp_path, capsys):
    folder = make_folder(tmp_path)
    assert main(["dataset", "tags", str(folder), "missing", "sky"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(folder / "a.png"), str(folder / "b.png")]
    assert "2 of 3 images lack 'sky'" in captured.err

    assert main(["dataset", "tags", str(folder), "replace", "red hair", "auburn hair",
                 "--only", "a.png"]) == 0
    out = capsys.readouterr().out
    assert f'{folder / "a.txt"}: -"red hair" +"auburn hair"' in out
    assert "Changed 1 of 1 caption files." in out
    assert (folder / "a.txt").read_text() == "1girl, solo, auburn hair"
    assert (folder / "b.txt").read_text() == CAPTIONS["b"]

    assert main(["dataset", "tags", str(folder), "add", "smile"]) == 2  # b has it already
    assert "--where-missing" in capsys.readouterr().err
