"""A full disk: a write that fails with ENOSPC / EDQUOT leaves the previous file as it was, no
temp file behind, and says which disk is full, how much is free and what to do; the commands
and the trainer end with that message (exit 2).

Most tests make the disk "full" through `fileio.write_fault_hook`; checkpoints (written by
accelerate, not the atomic writer) fail inside accelerate's save_state; the last test fills a
real (tmpfs) file system in a user namespace, where that is allowed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.core import fileio
from lora_studio.core.errors import DiskFullError, StudioError

TESTS = Path(__file__).resolve().parents[1]


def full_disk(*names: str, code: int = errno.ENOSPC):
    """A `write_fault_hook`: writes to the targets named (all, when none) fail as on a full
    disk, their temp file cut short first as a real one would be."""
    def hook(tmp: Path, target: Path) -> None:
        if names and target.name not in names:
            return
        data = tmp.read_bytes()
        tmp.write_bytes(data[: len(data) // 2])
        raise OSError(code, os.strerror(code), str(tmp))
    return hook


def assert_says_disk_full(message: str, folder: Path) -> None:
    assert f"disk holding {folder}" in message, message
    assert " free" in message and "Free some space" in message, message
    assert "another disk" in message, message


def no_temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ the atomic writer
@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "is full"),
                                         (errno.EDQUOT, "quota is used up")])
def test_a_full_disk_keeps_the_old_file_removes_the_temp_and_says_what_to_do(
        tmp_path, monkeypatch, code, words):
    target = tmp_path / "out" / "lora.safetensors"
    fileio.atomic_write_bytes(target, b"version 1")
    monkeypatch.setattr(fileio, "write_fault_hook", full_disk(code=code))
    with pytest.raises(DiskFullError) as caught:
        fileio.atomic_write_bytes(target, b"version 2, longer than the first")
    message = caught.value.user_message()
    assert_says_disk_full(message, target.parent)
    assert words in message and "lora.safetensors was not written" in message
    free = shutil.disk_usage(target.parent).free
    assert any(f"{free / scale:.1f} {unit}" in message
               for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)))
    assert target.read_bytes() == b"version 1"
    assert os.listdir(target.parent) == ["lora.safetensors"]
    assert isinstance(caught.value, OSError) and caught.value.errno == code  # callers that
    assert isinstance(caught.value, StudioError)  # handle OSError still do; the CLI says it


def test_the_words_of_the_writing_library_are_recognised(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"

    def safetensors_style(tmp: Path) -> None:  # what safetensors raises: no errno, only words
        tmp.write_bytes(b"half")
        raise RuntimeError("Error while serializing: I/O error: No space left on device "
                           "(os error 28)")

    with pytest.raises(DiskFullError):
        fileio.atomic_write_with(target, safetensors_style)

    def torch_style(tmp: Path) -> None:  # torch.save on a full disk: no errno, no words
        tmp.write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    with pytest.raises(RuntimeError, match="unexpected pos") as caught:  # plenty free: a bug
        fileio.atomic_write_with(target, torch_style)
    assert not isinstance(caught.value, DiskFullError)
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 4096)
    with pytest.raises(DiskFullError, match="4.1 kB free"):  # nothing left: a full disk
        fileio.atomic_write_with(target, torch_style)

    def a_bug(tmp: Path) -> None:
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        fileio.atomic_write_with(target, a_bug)
    assert not target.exists() and no_temp_files(tmp_path) == []


def test_a_caption_edit_on_a_full_disk_keeps_the_caption(tmp_path, monkeypatch):
    from lora_studio.core.dataset import tags

    caption = tmp_path / "img.txt"
    caption.write_text("zqstar, red\n", encoding="utf-8")
    changes = tags.add_trigger([tags.CaptionTarget(tmp_path / "img.png", caption)],
                               "sks")
    monkeypatch.setattr(fileio, "write_fault_hook", full_disk())
    with pytest.raises(DiskFullError) as caught:
        tags.apply_changes(changes)
    assert_says_disk_full(caught.value.user_message(), tmp_path)
    assert caption.read_text(encoding="utf-8") == "zqstar, red\n"
    assert no_temp_files(tmp_path) == []


def test_replacing_a_folder_never_leaves_half_of_one(tmp_path, monkeypatch):
    for exchange in (True, False):  # Linux swaps the two at once; elsewhere two renames
        if not exchange:
            monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
        target, staging = tmp_path / "fused", tmp_path / ".fused.new"
        target.mkdir(exist_ok=True)
        (target / "old.txt").write_text("old")
        staging.mkdir()
        (staging / "new.txt").write_text("new")
        fileio.replace_folder(staging, target)
        assert os.listdir(target) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["fused"]
        shutil.rmtree(target)


# ------------------------------------------------------------------ commands
def write_two_loras(folder: Path) -> tuple[Path, Path]:
    from kill_writer import make_lora

    from lora_studio.core.lora.formats import write_lora

    return (write_lora(make_lora(1), folder / "a.safetensors"),
            write_lora(make_lora(2), folder / "b.safetensors"))


def test_merge_on_a_full_disk_exits_2_and_keeps_the_previous_file(tmp_path, monkeypatch, capsys):
    from lora_studio.cli import main

    a, b = write_two_loras(tmp_path)
    out = tmp_path / "merged.safetensors"
    out.write_bytes(b"the merge of yesterday")
    monkeypatch.setattr(fileio, "write_fault_hook", full_disk("merged.safetensors"))
    assert main(["merge", f"{a}:0.5", f"{b}:0.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The disk holding")
    assert_says_disk_full(err, tmp_path)
    assert out.read_bytes() == b"the merge of yesterday" and no_temp_files(tmp_path) == []


@pytest.mark.slow
def test_fuse_on_a_full_disk_exits_2_and_keeps_the_previous_model(tiny_model_dir, tmp_path,
                                                                  monkeypatch, capsys):
    import diffusers

    from lora_files import make_lora_file

    from lora_studio.cli import main

    lora = make_lora_file(tiny_model_dir, tmp_path / "l.safetensors", seed=1)
    single, folder = tmp_path / "fused.safetensors", tmp_path / "fused"
    single.write_bytes(b"the fused model of yesterday")
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    monkeypatch.setattr(fileio, "write_fault_hook", full_disk("fused.safetensors"))
    args = ["fuse", "--model", str(tiny_model_dir), "--lora", f"{lora}:0.5", "--out"]
    assert main([*args, str(single)]) == 2
    assert_says_disk_full(capsys.readouterr().err, tmp_path)
    assert single.read_bytes() == b"the fused model of yesterday"

    def save_pretrained(self, save_directory, **kwargs):  # a diffusers folder: its own writer
        (Path(save_directory) / "unet").mkdir()
        (Path(save_directory) / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(diffusers.DiffusionPipeline, "save_pretrained", save_pretrained)
    assert main([*args, str(folder)]) == 2
    assert_says_disk_full(capsys.readouterr().err, tmp_path)
    assert os.listdir(folder) == ["model_index.json"]  # the previous folder, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused", "fused.safetensors",
                                                           "l.safetensors"]  # no staging


# ------------------------------------------------------------------ training
def training_config(model_dir: Path, root: Path, **train):
    from run_files import make_dataset

    from lora_studio.core.train.config import config_from_dict

    return config_from_dict({
        "model": {"base": str(model_dir)},
        "dataset": {"path": str(make_dataset(root / "data")), "resolution": 32,
                    "default_caption": "zqstar"},
        "lora": {"rank": 4, "alpha": 4.0, "targets": "attention"},
        "train": {"steps": 2, "learning_rate": 1e-3, "seed": 3, **train},
        "sample": {"every": 0},
        "checkpoint": {"every": 1},
        "output": {"path": str(root / "run"), "name": "t", "save_precision": "fp32"},
    })


@pytest.mark.slow
def test_train_on_a_full_disk_exits_2_and_keeps_the_previous_lora(tiny_model_dir, tmp_path,
                                                                  monkeypatch, capsys,
                                                                  one_torch_thread):
    from lora_studio.cli import main
    from lora_studio.core.train.config_io import config_to_toml

    config = tmp_path / "t.toml"
    config.write_text(config_to_toml(training_config(tiny_model_dir, tmp_path)))
    lora = tmp_path / "run" / "t.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(b"the LoRA of yesterday")
    monkeypatch.setattr(fileio, "write_fault_hook", full_disk("t.safetensors"))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert_says_disk_full(err, lora.parent)
    assert "t.safetensors was not written" in err
    assert lora.read_bytes() == b"the LoRA of yesterday"
    assert no_temp_files(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["oserror", "torch"])
def test_a_checkpoint_on_a_full_disk_keeps_the_previous_one(tiny_model_dir, tmp_path,
                                                           monkeypatch, failure,
                                                           one_torch_thread):
    """accelerate writes checkpoints itself: ENOSPC there (or torch.save's errno-less error
    with no space left) ends the run with the disk-full message, the partial folder gone and
    the previous checkpoint resumable."""
    from accelerate import Accelerator

    from lora_studio.core import events as ev
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.train.checkpoint import latest_checkpoint
    from lora_studio.core.train.trainer import run_training_job_with_code

    original, calls = Accelerator.save_state, []

    def save_state(self, output_dir=None, *args, **kwargs):
        calls.append(output_dir)
        if len(calls) != 2:
            return original(self, output_dir, *args, **kwargs)
        (Path(output_dir) / "optimizer.bin").write_bytes(b"cut short")
        if failure == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(fileio, "free_bytes", lambda folder: 0)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5 vs 3")

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    cfg = training_config(tiny_model_dir, tmp_path, steps=3)
    events = []
    end, code = run_training_job_with_code(cfg, events.append, JobControl())
    assert isinstance(end, ev.Failed) and code == 2
    checkpoints = tmp_path / "run" / "checkpoints"
    assert_says_disk_full(end.message, checkpoints)
    assert "Checkpoint step-2 was not saved" in end.message
    assert os.listdir(checkpoints) == ["step-1"]  # no .step-2.partial
    assert latest_checkpoint(tmp_path / "run") == checkpoints / "step-1"
    monkeypatch.undo()  # space again: the run goes on from step 1
    end, code = run_training_job_with_code(cfg, lambda e: None, JobControl(),
                                           resume_from=checkpoints / "step-1")
    assert isinstance(end, ev.Finished) and code == 0, getattr(end, "message", end)


# ------------------------------------------------------------------ a real full disk
def _can_mount_tmpfs() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                            "/tmp"], capture_output=True, timeout=30)  # in its own namespace
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user namespaces to mount a small tmpfs")
def test_a_real_full_disk(tiny_model_dir, tmp_path):
    """On a 4 MB tmpfs filled to the brim: a LoRA write, `lora-studio merge` and a training
    checkpoint (safetensors' and torch's own errors) all end with the disk-full message."""
    disk = tmp_path / "small_disk"
    disk.mkdir()
    child = TESTS / "disk_full_child.py"
    script = 'mount -t tmpfs -o size=4m tmpfs "$1" && exec "$0" "$2" "$1" "$3"'
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, str(disk),
                           str(child), str(tiny_model_dir)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    lora = results["write_lora"]
    assert lora["error"] == "DiskFullError" and lora["previous_intact"] and not lora["temps"]
    assert_says_disk_full(lora["message"], disk)
    merge = results["merge"]
    assert merge["code"] == 2 and merge["previous_intact"] and not merge["temps"]
    assert_says_disk_full(merge["stderr"], disk)
    train = results["checkpoint"]
    assert train["event"] == "Failed" and "Checkpoint step-2 was not saved" in train["message"]
    assert_says_disk_full(train["message"], disk / "run" / "checkpoints")
    assert train["checkpoints"] == ["step-1"] and train["latest_complete"]
