"""Resumable checkpoints: `<output>/checkpoints/step-<N>/`.

A checkpoint folder holds what `accelerator.save_state` writes (optimizer state, gradient
scaler, the RNG states of every process) with the model weights replaced by the LoRA weights
only (`lora_state.safetensors`, via the accelerate save/load hooks the trainer registers), plus:

* `trainer_state.json`: step, total steps, samples consumed (the data order is a pure function of
  seed and position, so this is the whole data-order state), epoch, seed, the LR scheduler state.
* `noise_rng_<rank>.safetensors`: the state of each process's noise / timestep generator.

Nothing in a checkpoint is a custom pickle: the learning-rate scheduler goes to JSON (accelerate
would unpickle it with `weights_only=False`). The folder is written as `.step-<N>.partial` and
renamed when complete, so a crash never leaves a half checkpoint under a real name (the next
save deletes what a killed run left; a full disk ends in `DiskFullError`, the partial folder
removed).
With `checkpoint.keep = N`, the checkpoints older than the newest N are deleted once a new one is
complete (each renamed to `.step-<N>.deleting` first, so a crash mid-delete leaves no broken
checkpoint under a real name).
Checkpoints are resume state for this machine's runs, not files to exchange: share the LoRA.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lora_studio.core.errors import ConfigError, StudioError
from lora_studio.core.fileio import (atomic_write_text, disk_full_error, is_disk_full,
                                    replace_folder)

STATE_FILE = "trainer_state.json"
LORA_STATE_FILE = "lora_state.safetensors"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step}"


def save_checkpoint(accelerator, output_dir: Path, step: int, noise_generator: torch.Generator,
                    trainer_state: dict[str, Any], keep: int = 0) -> Path:
    """Save everything needed to continue at `step` (collective: every process calls it); with
    `keep` > 0, then delete the checkpoints older than the newest `keep` (`checkpoint.keep`)."""
    from safetensors.torch import save_file

    final = checkpoint_dir(output_dir, step)
    partial = final.parent / f".{final.name}.partial"
    try:
        if accelerator.is_main_process:
            _remove_leftovers(final.parent)  # partial checkpoints of a run that was killed
            partial.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        save_file({"state": noise_generator.get_state().cpu()},
                  str(partial / f"noise_rng_{accelerator.process_index}.safetensors"))
        if accelerator.is_main_process:
            atomic_write_text(partial / STATE_FILE, json.dumps(trainer_state, indent=2))
    except Exception as exc:
        full = is_disk_full(exc, partial)  # before the partial folder frees its space
        shutil.rmtree(partial, ignore_errors=True)
        if full:
            raise disk_full_error(final.parent, exc, f"Checkpoint step-{step} was not saved "
                                  "(the earlier checkpoints are unchanged).") from exc
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Over an earlier step-N (a run resumed before N): never half of either under the name.
        replace_folder(partial, final, trash=final.parent / f".{final.name}.deleting")
        prune_checkpoints(output_dir, keep, protect=final)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete the complete checkpoints under `<output>/checkpoints` older (by step number) than
    the newest `keep`, never `protect` (the one just written); `keep` = 0 keeps all. Anything
    else in the folder (partial checkpoints, other files) is left alone. Returns what was
    deleted, oldest first."""
    if keep < 0:
        raise ConfigError("checkpoint.keep", f"must be >= 0, got {keep}")
    if keep == 0:
        return []
    found = sorted(_complete_checkpoints(Path(output_dir)))
    protected = Path(protect).resolve() if protect is not None else None
    doomed = [path for _, path in found[:-keep]
              if not path.is_symlink() and path.resolve() != protected]
    for path in doomed:
        _delete_checkpoint(path)
    return doomed


def _delete_checkpoint(path: Path) -> None:
    """Rename out of the checkpoint names first, then delete: never a half-deleted step-<N>."""
    trash = path.parent / f".{path.name}.deleting"
    try:
        if trash.exists():
            shutil.rmtree(trash)  # left by a crash in an earlier deletion
        os.replace(path, trash)
        shutil.rmtree(trash)
    except OSError as exc:
        raise StudioError(f"Could not delete the old checkpoint {path} ({exc}).",
                          "Close any program using that folder, or set checkpoint.keep = 0 "
                          "to keep every checkpoint; resume from the newest one with "
                          "--resume.") from exc


def _remove_leftovers(root: Path) -> None:
    """Delete the `.step-<N>.partial` / `.step-<N>.deleting` folders a killed run left in
    `root` (never a complete checkpoint: those are named `step-<N>`)."""
    for pattern in (".step-*.partial", ".step-*.deleting"):
        for leftover in root.glob(pattern) if root.is_dir() else []:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)


def _complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of each complete checkpoint: a folder named exactly `step-<N>` (as
    `checkpoint_dir` names it) holding the trainer state and the LoRA state."""
    root = output_dir / "checkpoints"
    found = []
    for child in root.glob("step-*") if root.is_dir() else []:
        suffix = child.name[len("step-"):]
        if (suffix.isdigit() and child.name == checkpoint_dir(output_dir, int(suffix)).name
                and (child / STATE_FILE).is_file() and (child / LORA_STATE_FILE).is_file()):
            found.append((int(suffix), child))
    return found


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint folder; StudioError when it is not one."""
    state_file = Path(folder) / STATE_FILE
    if not state_file.is_file() or not (Path(folder) / LORA_STATE_FILE).is_file():
        raise StudioError(f"Cannot resume from {folder}: it is not a training checkpoint "
                          f"(no {STATE_FILE} / {LORA_STATE_FILE}).",
                          "Pass a folder like <output>/checkpoints/step-500 to --resume.")
    try:
        return json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StudioError(f"Cannot resume from {folder}: {STATE_FILE} is unreadable ({exc}).",
                          "Pick an earlier checkpoint folder.") from exc


def load_noise_generator(folder: Path, rank: int, generator: torch.Generator) -> None:
    from safetensors.torch import load_file

    path = Path(folder) / f"noise_rng_{rank}.safetensors"
    if not path.is_file():
        raise StudioError(f"Cannot resume from {folder}: no noise generator state for process "
                          f"{rank}.", "Resume with the same number of processes as the run "
                          "that wrote the checkpoint.")
    generator.set_state(load_file(str(path))["state"])


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under `<output>/checkpoints`, if any."""
    found = _complete_checkpoints(Path(output_dir))
    return max(found)[1] if found else None
