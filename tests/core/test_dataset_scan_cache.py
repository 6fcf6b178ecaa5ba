"""A second check of a folder decodes only what changed (the cache keyed by path, size, mtime)."""

from __future__ import annotations

import os

from PIL import Image

import lora_studio.core.dataset.checks as checks
from lora_studio.core.dataset.checks import check_dataset
from lora_studio.core.dataset.scan_cache import cache_file


def count_decodes(monkeypatch) -> list:
    calls = []
    real = checks.inspect_image

    def counting(path, **kwargs):
        calls.append(path.name)
        return real(path, **kwargs)

    monkeypatch.setattr(checks, "inspect_image", counting)
    return calls


def make_folder(folder, count=4):
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (80 + 8 * i, 72), (i * 40, 90, 30)).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"not a png")
    return folder


def test_a_second_check_decodes_nothing_and_gives_the_same_report(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    calls = count_decodes(monkeypatch)
    first = check_dataset(folder)
    assert sorted(calls) == ["0.png", "1.png", "2.png", "3.png", "bad.png"]
    calls.clear()
    second = check_dataset(folder)
    assert calls == []
    assert [(i.image_path, i.size) for i in second.items] == \
        [(i.image_path, i.size) for i in first.items]
    assert [(s.path, s.reason) for s in second.skipped] == \
        [(s.path, s.reason) for s in first.skipped]


def test_a_changed_or_new_image_is_checked_again_and_a_deleted_one_leaves_the_cache(
        tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    check_dataset(folder)
    calls = count_decodes(monkeypatch)
    Image.new("RGB", (120, 64)).save(folder / "1.png")  # replaced: another size
    stat = (folder / "2.png").stat()
    os.utime(folder / "2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    Image.new("RGB", (90, 90)).save(folder / "new.png")
    (folder / "3.png").unlink()
    report = check_dataset(folder)
    assert sorted(calls) == ["1.png", "2.png", "new.png"]
    assert {i.image_path.name: i.size for i in report.items}["1.png"] == (120, 64)
    assert str(folder / "3.png") not in cache_file(folder).read_text()


def test_the_rule_is_part_of_the_key_and_a_broken_cache_is_ignored(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    check_dataset(folder, min_size=64)
    calls = count_decodes(monkeypatch)
    assert check_dataset(folder, min_size=100).usable == 0  # 80..104 x 72: too small now
    assert len(calls) == 5
    cache_file(folder).write_text("{not json", encoding="utf-8")
    calls.clear()
    assert check_dataset(folder).usable == 4
    assert len(calls) == 5
