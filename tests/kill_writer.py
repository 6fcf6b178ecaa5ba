"""A child process for tests/e2e/test_kill_safety.py: writes one KIND of file over and over
through the studio's own code, so the test can SIGKILL it at a random moment and then check
that what is on disk is whole.

    python tests/kill_writer.py KIND DIR [--model TINY_MODEL_DIR] [--serve]

Every version written is told apart by a counter (in the metadata, the text, the labels).
"ready" is printed once the first version is on disk; then it writes versions until killed.

With --serve it is a fork server, so the imports and set-up are paid once, not once per kill:
it prints "serving", then for each line on stdin
  "go N"   forks a writer (versions from N * 1_000_000 on) and prints "pid <pid>"; the writer
           prints "ready" (or "failed <why>") itself,
  "reap"   waits for that writer to end (the test has killed it) and prints "reaped",
  "finish" (checkpoint only) resumes the newest checkpoint for one more step in a forked
           process and prints "finished" or "failed <why>".
KINDS: lora, merge, fuse, fused_folder, caption, settings, queue, checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # lora_files, run_files

BLOB = 20_000  # filler, so that a write takes long enough to be killed in the middle of it
LORA_MODULES = 24


def say(line: str) -> None:
    """One line on stdout in one write(), so that the server's lines and its writer's never
    mix (each under PIPE_BUF: whole on a pipe)."""
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (line.replace("\n", " ")[:4000] + "\n").encode())


# ------------------------------------------------------------------ one writer per kind
def lora_module_names() -> list[str]:
    return [f"unet.down_blocks.0.attentions.{i // 4}.transformer_blocks.0.attn1."
            f"{('to_q', 'to_k', 'to_v', 'to_out.0')[i % 4]}" for i in range(LORA_MODULES)]


def make_lora(version: int, value: float | None = None):
    """A LoRA whose every weight is `value` (the version by default), its version in the
    metadata: a file of one version holds only that version's numbers."""
    import torch

    from lora_studio.core.lora.model import LoraFile, LoraModule

    fill = float((version if value is None else value) % 65536)  # exact in float32
    modules = {name: LoraModule(down=torch.full((8, 320), fill), up=torch.full((320, 8), fill),
                                alpha=8.0) for name in lora_module_names()}
    return LoraFile(modules=modules, metadata={"kill_test_version": str(version)}, arch="sd1")


def lora_writer(folder: Path, model: Path | None) -> Callable[[int], None]:
    from lora_studio.core.lora.formats import write_lora

    return lambda version: write_lora(make_lora(version), folder / "lora.safetensors")


def merge_writer(folder: Path, model: Path | None) -> Callable[[int], None]:
    from lora_studio.core.lora.formats import write_lora
    from lora_studio.core.lora.merge import merge_loras

    a, b = make_lora(1, 0.5), make_lora(2, 0.25)

    def write(version: int) -> None:
        merged = merge_loras([(a, 1.0), (b, float(version % 7))], title=f"v{version}")
        write_lora(merged.lora, folder / "merged.safetensors")
    return write


def _fused(folder: Path, model: Path):
    from lora_files import make_lora_file

    from lora_studio.core.lora.fuse import fused_pipeline

    lora = make_lora_file(model, folder / "source_lora.safetensors", seed=5)
    return fused_pipeline(model, [(lora, 0.5)])


def fuse_writer(folder: Path, model: Path) -> Callable[[int], None]:
    """What `fuse_loras` writes for a .safetensors output, from a pipeline fused once (by
    `fused_pipeline`, the first half of `fuse_loras`)."""
    from lora_studio.core.models.original_layout import save_single_file

    pipe = _fused(folder, model)
    return lambda version: save_single_file(
        pipe, folder / "fused.safetensors",
        metadata={"modelspec.merged_from": "source_lora.safetensors:0.5",
                  "kill_test_version": str(version)})


def fused_folder_writer(folder: Path, model: Path) -> Callable[[int], None]:
    """What `fuse_loras` writes for a folder output (a diffusers folder, staged and renamed)."""
    from lora_studio.core.models.tiny import save_pipeline_folder

    pipe = _fused(folder, model)
    return lambda version: save_pipeline_folder(pipe, folder / "fused")


def caption_text(version: int) -> str:
    return f"zqstar, version {version}, " + "detailed tag, " * (BLOB // 14) + f"end {version}"


def caption_writer(folder: Path, model: Path | None) -> Callable[[int], None]:
    """The Dataset tab's caption save: `atomic_write_text` beside the image."""
    from PIL import Image

    from lora_studio.core.fileio import atomic_write_text

    Image.new("RGB", (8, 8), (200, 40, 40)).save(folder / "img.png")
    return lambda version: atomic_write_text(folder / "img.txt", caption_text(version))


def settings_writer(folder: Path, model: Path | None) -> Callable[[int], None]:
    """The window's QSettings (an INI file), as `ui.settings.studio_settings` opens it."""
    from PySide6.QtCore import QSettings

    from lora_studio.ui.settings import studio_settings

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(folder))

    def write(version: int) -> None:
        settings = studio_settings()
        settings.setValue("kill_test/version", version)
        settings.setValue("kill_test/blob", f"{version}:" + "x" * BLOB + f":{version}")
        settings.sync()
        if settings.status() != QSettings.NoError:
            raise OSError(f"QSettings could not write {settings.fileName()}")
    return write


def queue_writer(folder: Path, model: Path | None) -> Callable[[int], None]:
    """The run queue (`queue.json`): every entry relabelled with the version, then saved."""
    from lora_studio.core.train.config import config_from_dict
    from lora_studio.core.train.queue import RunQueue

    queue = RunQueue(folder / "queue.json")
    config = config_from_dict({"dataset": {"path": str(folder)}}, validate=False)
    for i in range(8):
        queue.add(config, label=f"run {i} v0")

    def write(version: int) -> None:
        for i, run in enumerate(queue.runs):
            run.label = f"run {i} v{version}"
        queue.save()
    return write


WRITERS = {"lora": lora_writer, "merge": merge_writer, "fuse": fuse_writer,
           "fused_folder": fused_folder_writer, "caption": caption_writer,
           "settings": settings_writer, "queue": queue_writer}


def file_loop(write: Callable[[int], None]) -> Callable[[int], None]:
    def loop(first: int) -> None:
        write(first)
        say("ready")
        version = first + 1
        while True:
            write(version)
            version += 1
    return loop


# ------------------------------------------------------------------ checkpoints
def training_config(folder: Path, model: Path, steps: int, data: Path | None = None):
    from lora_studio.core.train.config import config_from_dict

    return config_from_dict({
        "model": {"base": str(model)},
        "dataset": {"path": str(data or folder / "data"), "resolution": 32,
                    "default_caption": "zqstar"},
        "lora": {"rank": 4, "alpha": 4.0, "targets": "attention"},
        "train": {"steps": steps, "learning_rate": 1e-3, "seed": 3},
        "sample": {"every": 0},
        "checkpoint": {"every": 1, "keep": 2},
        "output": {"path": str(folder / "run"), "name": "k", "save_every": 3,
                   "save_precision": "fp32"},
    })


def train_from_newest(folder: Path, model: Path, steps: int | None, on_checkpoint,
                      data: Path | None = None) -> object:
    """A training run resumed from the newest checkpoint (if any); `steps` None: many."""
    from lora_studio.core import events as ev
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.train.checkpoint import latest_checkpoint, read_trainer_state
    from lora_studio.core.train.trainer import run_training_job

    newest = latest_checkpoint(folder / "run")
    if steps is None:
        steps = 100_000
    elif newest is not None:
        steps = int(read_trainer_state(newest)["step"]) + steps

    def emit(event) -> None:
        if isinstance(event, ev.CheckpointSaved):
            on_checkpoint()
    return run_training_job(training_config(folder, model, steps, data), emit, JobControl(),
                            resume_from=newest)


def checkpoint_loop(folder: Path, model: Path) -> Callable[[int], None]:
    import importlib

    from run_files import make_dataset

    make_dataset(folder / "data")
    # What a training run imports, imported once here rather than in every forked run.
    for name in ("accelerate", "diffusers", "diffusers.optimization", "diffusers.training_utils",
                 "peft", "peft.utils", "transformers", "lora_studio.core.train.trainer",
                 "lora_studio.core.train.data", "lora_studio.core.train.families",
                 "lora_studio.core.train.preview", "lora_studio.core.train.tracking",
                 "lora_studio.core.train.export", "lora_studio.core.lora.formats",
                 "lora_studio.core.models.loading"):
        importlib.import_module(name)
    # And one short run, so what libraries build on first use is built once too.
    train_from_newest(folder / "warmup", model, 1, lambda: None, data=folder / "data")

    def loop(first: int) -> None:
        said = []

        def ready() -> None:
            if not said:
                said.append(True)
                say("ready")
        end = train_from_newest(folder, model, None, ready)
        say(f"failed {getattr(end, 'message', end)!r}")
    return loop


def finish_checkpoint(folder: Path, model: Path) -> None:
    from lora_studio.core import events as ev

    end = train_from_newest(folder, model, 1, lambda: None)
    say("finished" if isinstance(end, ev.Finished) else f"failed {end.message!r}")


# ------------------------------------------------------------------ running
def in_child(work: Callable[[], None]) -> int:
    """Fork; the child runs `work` and exits (a traceback becomes a "failed" line)."""
    sys.stdout.flush()
    server = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        die_with(server)
        work()
    except BaseException:  # noqa: B036 - the child must never return into the server loop
        say("failed " + repr(traceback.format_exc()[-3000:]))
        code = 1
    finally:
        sys.stdout.flush()
        os._exit(code)


def die_with(parent: int) -> None:
    """SIGKILL this process when `parent` ends (Linux), so no writer outlives a failed test."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before that took hold
        os._exit(1)


def serve(loop: Callable[[int], None], finish: Callable[[], None] | None) -> None:
    say("serving")
    pid = None
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "go":
            pid = in_child(lambda first=int(arg) * 1_000_000: loop(first))
            say(f"pid {pid}")
        elif command == "reap" and pid is not None:
            os.waitpid(pid, 0)
            pid = None
            say("reaped")
        elif command == "finish" and finish is not None:
            os.waitpid(in_child(finish), 0)
            say("reaped")
        elif command == "quit":
            break
    if pid is not None:  # the test went away mid-round
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def main(argv: list[str]) -> None:
    import torch
    import tqdm

    torch.set_num_threads(1)  # one thread: nothing running in the server when it forks
    tqdm.tqdm.monitor_interval = 0  # nor tqdm's monitor thread (progress bars while loading)
    kind, folder = argv[0], Path(argv[1])
    model = Path(argv[argv.index("--model") + 1]) if "--model" in argv else None
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "checkpoint":
        loop, finish = checkpoint_loop(folder, model), lambda: finish_checkpoint(folder, model)
    else:
        loop, finish = file_loop(WRITERS[kind](folder, model)), None
    if "--serve" in argv:
        serve(loop, finish)
    else:
        loop(0)


if __name__ == "__main__":
    main(sys.argv[1:])
