"""File modes of atomic writes: a new file gets what `open(..., "w")` would give under the
umask (not mkstemp's 0600), a rewritten file keeps its mode, and atomicity is unchanged."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from lora_studio.core import fileio
from lora_studio.core.fileio import atomic_path, atomic_write_text, atomic_write_with

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _clear_umask_cache() -> None:
    cache_clear = getattr(getattr(fileio, "_fallback_umask", None), "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


@pytest.fixture
def set_umask():
    """Set the process umask for one test; the original is always restored afterwards (with the
    real os.umask: the autouse monkeypatch is undone only after this fixture's teardown)."""
    real_umask = os.umask
    original = real_umask(0o022)
    real_umask(original)

    def apply(mask: int) -> None:
        real_umask(mask)
        _clear_umask_cache()

    yield apply
    real_umask(original)
    _clear_umask_cache()


@pytest.mark.parametrize(("mask", "expected"), [
    (0o022, 0o644),
    (0o077, 0o600),
    (0o002, 0o664),
    (0o027, 0o640),
], ids=lambda value: f"{value:04o}")
def test_new_file_gets_mode_of_plain_open_under_umask(tmp_path, set_umask, mask, expected):
    set_umask(mask)
    reference = tmp_path / "reference.txt"
    with open(reference, "w") as handle:
        handle.write("x")
    target = tmp_path / "new.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert _mode(target) == expected == _mode(reference)
    assert _leftovers(tmp_path) == []


def test_new_file_mode_when_writer_recreates_the_temp_file(tmp_path, set_umask):
    """Writers like PIL / safetensors open the temp path themselves; the mode is still fixed."""
    from PIL import Image

    set_umask(0o022)
    target = tmp_path / "preview.png"
    atomic_write_with(target, lambda tmp: Image.new("RGB", (4, 4)).save(tmp, format="PNG"))
    assert _mode(target) == 0o644
    with Image.open(target) as image:
        assert image.size == (4, 4)


def test_rewritten_file_keeps_0640(tmp_path, set_umask):
    set_umask(0o022)  # would give 0644 for a new file: the old mode must win
    target = tmp_path / "run.toml"
    target.write_text("old = 1\n")
    target.chmod(0o640)
    atomic_write_text(target, "new = 2\n")
    assert target.read_text() == "new = 2\n"
    assert _mode(target) == 0o640
    assert _leftovers(tmp_path) == []


def test_rewritten_caption_keeps_0644(tmp_path, set_umask):
    """The caption case: a 0644 caption edited in the studio stays readable by others."""
    set_umask(0o077)  # would give 0600 for a new file: the old mode must win
    caption = tmp_path / "cat.txt"
    caption.write_text("1girl, solo")
    caption.chmod(0o644)
    atomic_write_text(caption, "1girl, solo, smile")
    assert caption.read_text() == "1girl, solo, smile"
    assert _mode(caption) == 0o644
    assert _leftovers(tmp_path) == []


def test_rewrite_drops_setuid_bits(tmp_path, set_umask):
    set_umask(0o022)
    target = tmp_path / "odd.txt"
    target.write_text("a")
    target.chmod(0o4755)
    atomic_write_text(target, "b")
    assert _mode(target) == 0o755


def test_previous_file_intact_when_writer_raises(tmp_path, set_umask):
    set_umask(0o022)
    target = tmp_path / "lora.safetensors"
    target.write_bytes(b"good")
    target.chmod(0o640)

    def broken_writer(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_with(target, broken_writer)
    assert target.read_bytes() == b"good"
    assert _mode(target) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors"]


def test_no_temp_file_left_behind(tmp_path, set_umask):
    set_umask(0o022)
    target = tmp_path / "sub" / "out.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent  # same folder, so os.replace is atomic
        assert tmp != target
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]

    with pytest.raises(ValueError), atomic_path(target):
        raise ValueError("before anything was written")
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status is Linux")
def test_umask_read_without_changing_it_on_linux(tmp_path, set_umask, monkeypatch):
    """On Linux the umask comes from /proc, so no other thread can see a temporary umask."""
    set_umask(0o027)

    def no_umask_calls(_mask):
        raise AssertionError("os.umask() called: racy with other threads creating files")

    monkeypatch.setattr(os, "umask", no_umask_calls)
    target = tmp_path / "a.txt"
    atomic_write_text(target, "a")
    assert _mode(target) == 0o640


def test_umask_fallback_without_proc(tmp_path, set_umask, monkeypatch):
    """Without /proc (macOS, BSD) the umask is read once by set-and-restore, then cached."""
    set_umask(0o027)
    monkeypatch.setattr(fileio, "_proc_umask", lambda: None)
    _clear_umask_cache()
    target = tmp_path / "a.txt"
    atomic_write_text(target, "a")
    assert _mode(target) == 0o640
    assert os.umask(0o027) == 0o027  # restored after the probe
    calls = []
    real_umask = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
    atomic_write_text(tmp_path / "b.txt", "b")
    assert calls == []  # cached
    assert _mode(tmp_path / "b.txt") == 0o640


def test_a_saved_model_folder_gets_the_mode_of_an_ordinary_folder(tmp_path, set_umask):
    """A fused / tiny model is saved into a mkdtemp staging folder (0700) and renamed."""
    from lora_studio.core.models.tiny import save_pipeline_folder

    class FakePipe:
        def save_pretrained(self, folder, safe_serialization=True):
            (Path(folder) / "model_index.json").write_text("{}")

    set_umask(0o022)
    save_pipeline_folder(FakePipe(), tmp_path / "fused")
    assert stat.S_IMODE((tmp_path / "fused").stat().st_mode) == 0o755
