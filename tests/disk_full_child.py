"""Run by tests/core/test_disk_full.py inside a user + mount namespace, with DISK a freshly
mounted 4 MB tmpfs: fills it and checks what the studio does on a real full disk (the kernel's
ENOSPC, in the words of each library that writes). Prints one JSON line of findings.

    python tests/disk_full_child.py DISK TINY_MODEL_DIR
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # kill_writer, run_files


def fill(disk: Path, leave: int = 16_000) -> None:
    """Write zeros until the disk is full, then give back `leave` bytes."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)  # unbuffered: nothing left to flush
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.ftruncate(fd, max(os.fstat(fd).st_size - leave, 0))
        os.close(fd)


def temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*") if p.name.endswith(".tmp")]


def write_lora_check(disk: Path) -> dict:
    from kill_writer import make_lora

    from lora_studio.core.lora.formats import write_lora

    target = write_lora(make_lora(1), disk / "lora.safetensors")
    before = target.read_bytes()
    fill(disk)
    try:
        write_lora(make_lora(2), target)
        found = {"error": None}
    except Exception as exc:  # noqa: BLE001 - the test looks at what it was
        found = {"error": type(exc).__name__, "message": str(exc)}
    found.update(previous_intact=target.read_bytes() == before, temps=temps(disk))
    for filler in disk.glob("filler-*"):
        filler.unlink()
    return found


def merge_check(disk: Path) -> dict:
    from kill_writer import make_lora

    from lora_studio.cli import main
    from lora_studio.core.lora.formats import write_lora

    a = write_lora(make_lora(1), disk / "a.safetensors")
    b = write_lora(make_lora(2), disk / "b.safetensors")
    out = disk / "merged.safetensors"
    out.write_bytes(b"yesterday")
    fill(disk)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["merge", f"{a}:0.5", f"{b}:0.5", "--out", str(out)])
    found = {"code": code, "stderr": err.getvalue(),
             "previous_intact": out.read_bytes() == b"yesterday", "temps": temps(disk)}
    for path in [*disk.glob("filler-*"), a, b, out]:
        path.unlink()
    return found


def checkpoint_check(disk: Path, model: Path) -> dict:
    """A training run on the small disk; the disk fills up once the first checkpoint is
    written, so the second fails inside accelerate / torch / safetensors."""
    from run_files import make_dataset

    from lora_studio.core import events as ev
    from lora_studio.core.jobs import JobControl
    from lora_studio.core.train.checkpoint import latest_checkpoint, read_trainer_state
    from lora_studio.core.train.config import config_from_dict
    from lora_studio.core.train.trainer import run_training_job

    cfg = config_from_dict({
        "model": {"base": str(model)},
        "dataset": {"path": str(make_dataset(disk.parent / "data")), "resolution": 32,
                    "default_caption": "zqstar"},
        "lora": {"rank": 4, "alpha": 4.0, "targets": "attention"},
        "train": {"steps": 3, "learning_rate": 1e-3, "seed": 3},
        "sample": {"every": 0},
        "checkpoint": {"every": 1},
        "output": {"path": str(disk / "run"), "name": "t", "save_precision": "fp32"},
    })

    def emit(event) -> None:
        if isinstance(event, ev.CheckpointSaved) and event.step == 1:
            fill(disk, leave=80_000)  # room for the LoRA state, not for torch's optimizer file

    end = run_training_job(cfg, emit, JobControl())
    run = disk / "run"
    latest = latest_checkpoint(run)
    complete = latest is not None and read_trainer_state(latest)["step"] == 1 and \
        {"optimizer.bin", "lora_state.safetensors"} <= set(os.listdir(latest))
    return {"event": type(end).__name__, "message": getattr(end, "message", ""),
            "causes": [line for line in getattr(end, "details", "").splitlines()
                       if "Error" in line and not line.startswith(" ")],  # torch's, here
            "checkpoints": sorted(os.listdir(run / "checkpoints")),
            "latest_complete": complete}


def main(disk: Path, model: Path) -> None:
    import torch

    torch.set_num_threads(1)
    findings = {"write_lora": write_lora_check(disk), "merge": merge_check(disk),
                "checkpoint": checkpoint_check(disk, model)}
    print(json.dumps(findings))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
