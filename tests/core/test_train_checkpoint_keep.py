"""`checkpoint.keep`: only the newest N resumable checkpoints stay on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError
from lora_studio.core.train import checkpoint as ckpt
from test_train_loop import dataset, make_config, run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # steady on a busy machine

# What a real checkpoint folder holds (accelerate's files + the trainer's own).
CHECKPOINT_FILES = ("optimizer.bin", "random_states_0.pkl", ckpt.LORA_STATE_FILE,
                    "noise_rng_0.safetensors", ckpt.STATE_FILE)


def fake_checkpoint(out: Path, step: int) -> Path:
    folder = ckpt.checkpoint_dir(out, step)
    folder.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (folder / name).write_text(json.dumps({"step": step}))
    return folder


def names(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_keep_two_leaves_the_two_newest_by_step_and_nothing_else_is_touched(tmp_path):
    for step in (1, 2, 3, 4, 10):  # step-10 sorts before step-2 by name: steps are numbers
        fake_checkpoint(tmp_path, step)
    root = tmp_path / "checkpoints"
    (root / ".step-11.partial").mkdir()  # being written: not a checkpoint yet
    (root / ".step-11.partial" / ckpt.STATE_FILE).write_text("{}")
    (root / "step-12").mkdir()  # incomplete (no LoRA state): not a checkpoint
    (root / "step-12" / ckpt.STATE_FILE).write_text("{}")
    (root / "step-007").mkdir()  # not a name the trainer writes
    (root / "notes.txt").write_text("mine")

    removed = ckpt.prune_checkpoints(tmp_path, keep=2, protect=root / "step-10")

    assert [p.name for p in removed] == ["step-1", "step-2", "step-3"]
    assert names(tmp_path) == [".step-11.partial", "notes.txt", "step-007", "step-10", "step-12",
                               "step-4"]
    assert all((root / "step-4" / f).is_file() for f in CHECKPOINT_FILES)


def test_the_checkpoint_just_written_is_never_deleted(tmp_path):
    # Resumed from step-3 while step-5 and step-6 of the abandoned run are still there.
    for step in (3, 4, 5, 6):
        fake_checkpoint(tmp_path, step)
    ckpt.prune_checkpoints(tmp_path, keep=2, protect=ckpt.checkpoint_dir(tmp_path, 4))
    assert names(tmp_path) == ["step-4", "step-5", "step-6"]


def test_keep_zero_keeps_all_and_a_negative_keep_is_an_error(tmp_path):
    for step in (1, 2, 3):
        fake_checkpoint(tmp_path, step)
    assert ckpt.prune_checkpoints(tmp_path, keep=0) == []
    assert names(tmp_path) == ["step-1", "step-2", "step-3"]
    with pytest.raises(ConfigError, match="checkpoint.keep"):
        ckpt.prune_checkpoints(tmp_path, keep=-1)
    assert ckpt.prune_checkpoints(tmp_path / "never-trained", keep=1) == []


def test_a_deletion_interrupted_by_a_crash_is_finished_next_time(tmp_path):
    fake_checkpoint(tmp_path, 1)
    stale = tmp_path / "checkpoints" / ".step-1.deleting"
    stale.mkdir()
    (stale / "optimizer.bin").write_text("half deleted")
    fake_checkpoint(tmp_path, 2)
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert names(tmp_path) == ["step-2"]


def test_save_checkpoint_with_keep_prunes_after_the_new_one_is_complete(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    optimizer = accelerator.prepare(torch.optim.AdamW(model.parameters()))

    def save_hook(models, weights, output_dir):  # the trainer writes the LoRA state here
        (Path(output_dir) / ckpt.LORA_STATE_FILE).write_bytes(b"lora")
        weights.clear()

    handle = accelerator.register_save_state_pre_hook(save_hook)
    generator = torch.Generator().manual_seed(0)
    try:
        for step in (1, 2, 3, 4):
            ckpt.save_checkpoint(accelerator, tmp_path, step, generator, {"step": step}, keep=2)
    finally:
        handle.remove()
    assert optimizer is not None
    assert names(tmp_path) == ["step-3", "step-4"]
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.checkpoint_dir(tmp_path, 4)
    assert ckpt.read_trainer_state(ckpt.checkpoint_dir(tmp_path, 4))["step"] == 4


def test_a_run_with_keep_two_leaves_the_two_newest_and_resumes_from_the_last(tiny_model_dir,
                                                                             dataset, tmp_path):
    # Needs the trainer to pass keep=cfg.checkpoint.keep to ckpt.save_checkpoint.
    cfg = make_config(tiny_model_dir, dataset, tmp_path / "out", train={"steps": 5},
                      checkpoint={"every": 1, "keep": 2})
    rec = run(cfg)
    assert isinstance(rec.terminal, ev.Finished)
    assert [e.step for e in rec.of(ev.CheckpointSaved)] == [1, 2, 3, 4]
    assert names(tmp_path / "out") == ["step-3", "step-4"]

    rec = run(cfg, resume=ckpt.checkpoint_dir(tmp_path / "out", 4))
    assert isinstance(rec.terminal, ev.Finished)
    assert [e.step for e in rec.of(ev.StepProgress)] == [5]
