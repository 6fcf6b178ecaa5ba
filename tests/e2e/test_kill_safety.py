"""SIGKILL at random moments while the studio writes (a LoRA, a merge, a fused model, a caption,
the window's settings, the run queue, checkpoints): what is on disk under a real name is always
one whole version, leftover temp files are never picked up, and the newest checkpoint resumes.

The writer is tests/kill_writer.py, run as a fork server (one process per kind pays the imports;
each kill hits a freshly forked writer). The kill moments come from a seeded RNG: the seed is
printed with every failure, and LORA_STUDIO_KILL_SEED=<seed> replays it.
"""

from __future__ import annotations

import configparser
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

WRITER = Path(__file__).resolve().parents[1] / "kill_writer.py"
SEED = int(os.environ.get("LORA_STUDIO_KILL_SEED", random.SystemRandom().randrange(2**32)))
KILLS = 15


class KillServer:
    """Drives `kill_writer.py KIND DIR --serve`."""

    def __init__(self, kind: str, folder: Path, model: Path | None = None):
        self.kind, self.folder = kind, folder
        args = [sys.executable, str(WRITER), kind, str(folder), "--serve"]
        args += ["--model", str(model)] if model else []
        self.errors = open(folder.parent / f"{kind}-stderr.txt", "w+", encoding="utf-8")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errors, text=True, bufsize=1,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.pid = None
        self.expect("serving", timeout=180)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("eof")

    def fail(self, why: str) -> None:
        self.errors.seek(0)
        pytest.fail(f"{self.kind}: {why} (seed {SEED}; replay with LORA_STUDIO_KILL_SEED="
                    f"{SEED})\n{self.errors.read()[-3000:]}")

    def expect(self, word: str, timeout: float = 120) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.fail(f"no '{word}' within {timeout} s")
        if not line.startswith(word):
            self.fail(f"expected '{word}', got {line[:2000]!r}")
        return line

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill_round(self, index: int, delay_s: float) -> None:
        """Fork a writer, wait until its first version is on disk, let it write on for
        `delay_s`, SIGKILL it and wait until it is gone."""
        self.send(f"go {index}")
        self.pid = int(self.expect("pid").split()[1])
        self.expect("ready")
        time.sleep(delay_s)
        os.kill(self.pid, signal.SIGKILL)
        self.send("reap")
        self.expect("reaped")
        self.pid = None

    def close(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            try:
                self.send("reap" if self.pid is not None else "quit")
                self.send("quit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.errors.close()


def kill_repeatedly(kind: str, folder: Path, check, *, max_delay_s: float,
                    kills: int = KILLS, model: Path | None = None) -> list:
    """`kills` rounds of fork, write, SIGKILL; `check(folder)` after each; their results."""
    rng = random.Random(f"{SEED}-{kind}")
    server = KillServer(kind, folder, model)
    found = []
    try:
        for index in range(kills):
            server.kill_round(index + 1, rng.uniform(0.0, max_delay_s))
            try:
                found.append(check(folder))
            except AssertionError as exc:
                server.fail(f"after kill {index + 1}: {exc}")
    finally:
        server.close()
    return found


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def read_all_tensors(path: Path) -> dict[str, str]:
    """Open a .safetensors file and read every tensor (a cut-short file fails here); its
    metadata."""
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            f.get_tensor(key)
        return f.metadata() or {}


def only_real_loras_listed(folder: Path) -> None:
    from lora_studio.ui.lora_library import lora_files_in

    listed = lora_files_in(folder)
    hidden = [p for p in listed if any(part.startswith(".")
                                       for part in p.relative_to(folder).parts)]
    assert not hidden, f"the LoRA library would list half-written files: {hidden}"
    assert not [p for p in listed if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ checks per kind
def check_lora(folder: Path) -> int:
    from kill_writer import make_lora

    from lora_studio.core.lora.formats import read_lora

    path = folder / "lora.safetensors"
    version = int(read_all_tensors(path)["kill_test_version"])
    lora = read_lora(path)
    expected = make_lora(version)
    assert lora.modules.keys() == expected.modules.keys()
    for name, module in lora.modules.items():  # every number of that one version
        assert torch.equal(module.down, expected.modules[name].down), name
        assert torch.equal(module.up, expected.modules[name].up), name
    only_real_loras_listed(folder)
    return version


def check_merge(folder: Path) -> int:
    from lora_studio.core.lora.formats import read_lora

    path = folder / "merged.safetensors"
    metadata = read_all_tensors(path)
    lora = read_lora(path)
    assert len(lora.modules) > 0 and metadata["ss_output_name"].startswith("v")
    only_real_loras_listed(folder)
    return int(metadata["ss_output_name"][1:])


def check_fuse(folder: Path) -> int:
    metadata = read_all_tensors(folder / "fused.safetensors")
    assert metadata["modelspec.merged_from"] == "source_lora.safetensors:0.5"
    only_real_loras_listed(folder)
    return int(metadata["kill_test_version"])


def check_fused_folder(folder: Path) -> tuple:
    out = folder / "fused"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    for name in files:
        if name.endswith(".json"):
            json.loads((out / name).read_text(encoding="utf-8"))
        elif name.endswith(".safetensors"):
            read_all_tensors(out / name)
    assert "model_index.json" in files and any(f.startswith("unet/") for f in files)
    only_real_loras_listed(folder)
    return tuple(files)


def check_caption(folder: Path) -> int:
    from kill_writer import caption_text

    from lora_studio.core.dataset.scan import list_dataset_files, read_caption

    text = (folder / "img.txt").read_text(encoding="utf-8")
    version = int(re.match(r"zqstar, version (\d+),", text).group(1))
    assert text == caption_text(version), "the caption is not one whole version"
    listing = list_dataset_files(folder)  # what the Dataset tab scans
    assert listing.images == [folder / "img.png"]
    assert list(listing.captions.values()) == [folder / "img.txt"]
    assert not [p for p in listing.ignored if p.name.startswith(".")], listing.ignored
    assert read_caption(folder / "img.txt") == text.strip()
    return version


def check_settings(folder: Path) -> int:
    path = folder / "LoRA Studio" / "LoRA Studio.ini"
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(path.read_text(encoding="utf-8"))
    version = int(ini["kill_test"]["version"])
    assert ini["kill_test"]["blob"] == f"{version}:" + "x" * 20_000 + f":{version}"
    return version


def check_queue(folder: Path) -> int:
    from lora_studio.core.train.queue import RunQueue

    path = folder / "queue.json"
    assert len(json.loads(path.read_text(encoding="utf-8"))) == 8
    labels = [run.label for run in RunQueue(path).runs]
    versions = {label.rpartition(" v")[2] for label in labels}
    assert len(labels) == 8 and len(versions) == 1, labels
    assert all(run.config().dataset.path for run in RunQueue(path).runs)
    return int(versions.pop())


def assert_versions_moved_on(found: list) -> None:
    """The writer did write new versions between kills (each round starts a new range)."""
    assert len(set(found)) > 1, found


# The caption and queue writers spend much of their time with the file open: a writer that is
# not atomic is caught within a few kills. A LoRA, merge or fused-model write is mostly
# computing (hashes, key layouts) and puts the file out in one write() that a kill rarely lands
# in: those rounds show the real path stays whole, but would rarely catch a non-atomic one.
@pytest.mark.parametrize("kind, check", [("lora", check_lora), ("merge", check_merge),
                                         ("caption", check_caption),
                                         ("settings", check_settings), ("queue", check_queue)])
def test_a_killed_write_leaves_one_whole_version(kind, check, tmp_path):
    found = kill_repeatedly(kind, tmp_path / kind, check, max_delay_s=0.05)
    assert_versions_moved_on(found)


@pytest.mark.slow
@pytest.mark.parametrize("kind, check", [("fuse", check_fuse),
                                         ("fused_folder", check_fused_folder)])
def test_a_killed_fuse_leaves_one_whole_model(kind, check, tiny_model_dir, tmp_path):
    found = kill_repeatedly(kind, tmp_path / kind, check, max_delay_s=0.3, kills=10,
                            model=tiny_model_dir)
    if kind == "fuse":
        assert_versions_moved_on(found)
    else:
        assert len(set(found)) == 1, "every fused folder left has the same files"


def test_an_empty_settings_lock_left_by_a_kill_is_dropped(tmp_path):
    """Killed between creating `<settings>.lock` and writing who holds it, Qt leaves it empty
    and the next save would wait until it is 30 s old, the window frozen: the studio drops such
    a lock (nobody holds it), never one a live process holds."""
    fcntl = pytest.importorskip("fcntl")
    from PySide6.QtCore import QSettings

    from lora_studio.ui.settings import studio_settings

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(tmp_path))
    lock = Path(studio_settings().fileName() + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_bytes(b"")
    held = os.open(lock, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as a live Qt process holds its lock
    studio_settings()
    assert lock.exists()
    os.close(held)  # its holder is gone
    settings = studio_settings()
    assert not lock.exists()
    settings.setValue("kill_test/version", 1)
    settings.sync()
    assert settings.status() == QSettings.NoError and not lock.exists()


# ------------------------------------------------------------------ checkpoints
def check_checkpoints(folder: Path) -> int:
    """Every folder named step-<N> is a whole checkpoint; the newest one's step."""
    from lora_studio.core.train.checkpoint import latest_checkpoint, read_trainer_state

    run = folder / "run"
    newest = latest_checkpoint(run)
    assert newest is not None, "a checkpoint was complete before the kill"
    for step_dir in sorted((run / "checkpoints").glob("step-*")):
        state = read_trainer_state(step_dir)
        assert state["step"] == int(step_dir.name.removeprefix("step-"))
        names = {p.name for p in step_dir.iterdir()}
        assert {"optimizer.bin", "lora_state.safetensors", "noise_rng_0.safetensors"} <= names
        for name in names:
            if name.endswith(".safetensors"):
                read_all_tensors(step_dir / name)
    config = run / "k.toml"  # the settings copy, rewritten by every (resumed) run
    if config.exists():
        import tomllib

        tomllib.loads(config.read_text(encoding="utf-8"))
    for lora in run.glob("*.safetensors"):
        read_all_tensors(lora)
    only_real_loras_listed(run)
    return int(read_trainer_state(newest)["step"])


@pytest.mark.slow
def test_killed_training_always_resumes_from_its_newest_checkpoint(tiny_model_dir, tmp_path):
    """Each round resumes from the newest checkpoint the kill before left (a resume that
    fails ends the test), checkpoints every step (keeping 2), and is killed at a random moment
    after its first new checkpoint: mid-step, mid-save, mid-rename or mid-prune."""
    from lora_studio.core.train.checkpoint import latest_checkpoint

    folder = tmp_path / "checkpoint"
    stale = [folder / "run" / "checkpoints" / name  # what killed runs leave, planted
             for name in (".step-1.partial", ".step-99999.partial", ".step-7.deleting")]
    for leftover in stale:
        leftover.mkdir(parents=True)
        (leftover / "optimizer.bin").write_bytes(b"half")
    assert latest_checkpoint(folder / "run") is None  # none of them is a checkpoint
    rng = random.Random(f"{SEED}-checkpoint")
    server = KillServer("checkpoint", folder, tiny_model_dir)
    steps = []
    try:
        for index in range(12):
            server.kill_round(index + 1, rng.uniform(0.0, 0.6))
            try:
                steps.append(check_checkpoints(folder))
            except AssertionError as exc:
                server.fail(f"after kill {index + 1}: {exc}")
            if index == 0:
                assert not [p for p in stale if p.exists()], "the next save removes them"
        server.send("finish")  # the newest checkpoint, resumed for one more step, finishes
        line = server.lines.get(timeout=180)
        if line != "finished":
            server.fail(f"resuming {steps[-1]} failed: {line[:2000]}")
        server.expect("reaped")
    finally:
        server.close()
    assert steps == sorted(steps) and steps[-1] > steps[0], steps  # each run went further
