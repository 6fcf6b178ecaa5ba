"""Grids over one training run's saved states: which step is best (`lora-studio grid --run`).

A run's output folder (`output.path`) holds the final LoRA `<name>.safetensors`, the config it
was trained with `<name>.toml`, intermediate LoRAs `<name>-step<N>.safetensors` (written every
`output.save_every` steps, or by "Save now"), and resumable checkpoints
`checkpoints/step-<N>/lora_state.safetensors` (every `checkpoint.every` steps). A checkpoint
holds the LoRA's weights in PEFT form, without its alpha (that is in the config).

    list_run(folder, name=None) -> RunListing     the saved states in step order
    export_checkpoint(listing, state) -> Path     a checkpoint as <name>-step<N>.safetensors
    run_grid(session, listing, request, strength, prompts) -> GridResult

`run_grid` renders one column per saved state and one row per prompt, every cell with the same
seed and only that state's LoRA switched on, at `strength` (the session's other LoRAs are
switched off meanwhile and come back after). States that live only in a checkpoint are first
exported beside the others, named as the trainer names its intermediate files (alpha from the
run's config, the run's layout and precision), so they are ordinary LoRA files afterwards.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lora_studio.core import events
from lora_studio.core.errors import LoraFormatError, StudioError
from lora_studio.core.generate.grid import (CellDone, GridResult, compose, fixed_seed,
                                            render_cell, run_cells)
from lora_studio.core.generate.session import GenerationRequest, GenerationSession

SUFFIX = ".safetensors"
CHECKPOINT_WEIGHTS = "lora_state.safetensors"  # = core.train.checkpoint.LORA_STATE_FILE
_STEP_FILE = re.compile(r"^(?P<name>.+)-step(?P<step>\d+)$")
_CHECKPOINT = re.compile(r"^step-(?P<step>\d+)$")
_FIX_FOLDER = ("Choose the output folder of one training run (it holds <name>.safetensors and "
               "<name>.toml).")


@dataclass(frozen=True)
class SavedState:
    """One saved state of a run: its step (None: unknown), the LoRA file (or, when
    `checkpoint_only`, the checkpoint folder), and whether it is the run's final file."""

    step: int | None
    path: Path
    final: bool = False
    checkpoint_only: bool = False

    @property
    def label(self) -> str:
        step = f"step {self.step}" if self.step is not None else ""
        return f"{step}\nfinal".strip() if self.final else step


@dataclass
class RunListing:
    folder: Path
    name: str
    states: list[SavedState]
    config: dict[str, Any] = field(default_factory=dict)  # the run's <name>.toml, if readable
    skipped: list[str] = field(default_factory=list)  # why some saved states cannot be used

    @property
    def sample(self) -> dict[str, Any]:
        """The run's preview settings (prompts, seed, steps, cfg, sampler, negative_prompt)."""
        return dict(self.config.get("sample", {}))

    def nearest(self, step: int) -> SavedState | None:
        """The saved state closest to `step` (the earlier one on a tie): what to keep when the
        validation loss was best at `step`."""
        known = [s for s in self.states if s.step is not None]
        return min(known, key=lambda s: (abs(s.step - step), s.step)) if known else None

    def best_step_note(self, step: int) -> str:
        """A sentence saying where validation was best and which saved LoRA is nearest."""
        state = self.nearest(step)
        if state is None:
            return f" The validation loss was best at step {step}."
        return (f" The validation loss was best at step {step}; the nearest saved LoRA is "
                f"step {state.step} ({state.path.name}).")

    @property
    def only_final(self) -> bool:
        return all(s.final for s in self.states)

    def summary(self) -> str:
        """What was found, in a sentence or two a person reads before rendering."""
        if not self.states:
            text = f"No LoRA of {self.name} in {self.folder}."
        elif self.only_final:
            text = (f"This run kept only its final LoRA ({self.states[0].path.name}): there are "
                    "no steps to compare. To keep some, train with output.save_every (a LoRA "
                    "file every N steps) or checkpoint.every above 0 in the preset.")
        else:
            steps = ", ".join(s.label.replace("\n", " ") for s in self.states)
            text = f"{len(self.states)} saved states of {self.name}: {steps}."
            exported = [str(s.step) for s in self.states if s.checkpoint_only]
            if len(exported) == 1:
                text += (f" Step {exported[0]} is only in a checkpoint: rendering exports it "
                         f"as {self.name}-step{exported[0]}.safetensors beside the others.")
            elif exported:
                text += (f" Steps {', '.join(exported)} are only in checkpoints: rendering "
                         f"exports them as {self.name}-step<N>.safetensors beside the others.")
        return " ".join([text, *self.skipped])


def list_run(folder: str | Path, name: str | None = None) -> RunListing:
    """The saved states of the run in `folder`, in step order (the final file last).
    StudioError when the folder holds no run, or several and `name` does not say which."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudioError(f"{folder} is not a folder.", _FIX_FOLDER)
    name = name or _run_name(folder)
    config = _read_config(folder / f"{name}.toml")
    by_step: dict[int | None, SavedState] = {}
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        match = _STEP_FILE.match(path.stem)
        if match and match["name"] == name:
            by_step.setdefault(int(match["step"]), SavedState(int(match["step"]), path))
    final_path = folder / f"{name}{SUFFIX}"
    final = None
    if final_path.is_file():
        final = SavedState(_steps_of(final_path), final_path, final=True)
        by_step.pop(final.step, None)  # the same step twice: the final file is that state
    skipped: list[str] = []
    for step, path in _checkpoints(folder):
        if step in by_step or (final is not None and final.step == step):
            continue
        if not _alpha_of(config):
            skipped.append(f"The checkpoint at step {step} cannot be used: {name}.toml (the "
                           "run's config, with the LoRA's alpha) is missing.")
            continue
        by_step[step] = SavedState(step, path, checkpoint_only=True)
    states = [by_step[s] for s in sorted(k for k in by_step if k is not None)]
    if final is not None:
        states.append(final)
    if not states:
        raise StudioError(f"No saved LoRA of the run {name!r} in {folder}.", _FIX_FOLDER)
    return RunListing(folder, name, states, config, skipped)


def export_checkpoint(listing: RunListing, state: SavedState) -> Path:
    """Write the LoRA weights of a checkpoint as `<name>-step<N>.safetensors` in the run's
    folder (atomically; the run's layout and precision; the final file's training metadata
    with this step). Returns the file; a state that is a file already is returned as is."""
    import torch

    from lora_studio.core.lora import layouts
    from lora_studio.core.lora.card import save_lora_with_card
    from lora_studio.core.lora.formats import lora_from_state_dict
    from lora_studio.core.lora.sft import load_tensors, read_header

    if not state.checkpoint_only:
        return state.path
    alpha = _alpha_of(listing.config)
    if not alpha:
        raise StudioError(f"Cannot export the checkpoint at step {state.step}: the run's "
                          f"config {listing.name}.toml is missing.", _FIX_FOLDER)
    tensors, _ = load_tensors(state.path / CHECKPOINT_WEIGHTS)
    configs = {f"{part}.lora_alpha": alpha for part in ("unet", "text_encoder")}
    lora = lora_from_state_dict(tensors, {layouts.ADAPTER_METADATA_KEY: json.dumps(configs)},
                                source=f"checkpoints/step-{state.step}")
    final = next((s for s in listing.states if s.final), None)
    metadata = dict(read_header(final.path).metadata) if final is not None else {}
    for key in ("ss_epoch", "ss_training_finished_at"):  # not known for this step
        metadata.pop(key, None)
    metadata.update({"ss_steps": str(state.step), "ss_output_name": listing.name,
                     "lora_studio.exported_from": f"checkpoints/step-{state.step}"})
    lora.metadata = metadata
    output = listing.config.get("output", {})
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(
        output.get("save_precision", "fp16"), torch.float16)
    layout = output.get("format", "kohya") if output.get("format") in ("kohya", "diffusers") \
        else "kohya"
    return save_lora_with_card(lora, listing.folder / f"{listing.name}-step{state.step}{SUFFIX}",
                               layout=layout, dtype=dtype,
                               sources=[final.path] if final is not None else [])[0]


def run_grid(session: GenerationSession, listing: RunListing, request: GenerationRequest,
             strength: float = 1.0, prompts: list[str] | None = None, *,
             states: list[SavedState] | None = None, control: Any = None,
             cell_done: CellDone | None = None, emit: events.Emit | None = None) -> GridResult:
    """One column per saved state (default: all of the listing), one row per prompt (default:
    the request's); see the module docstring."""
    states = list(listing.states if states is None else states)
    prompts = list(prompts or [request.prompt])
    if not states:
        raise StudioError("No saved states to compare.", _FIX_FOLDER)
    say = emit or (lambda event: None)
    files = []
    for state in states:
        path = export_checkpoint(listing, state)
        if state.checkpoint_only:
            say(events.Log(f"Exported the checkpoint at step {state.step} as {path.name}."))
        files.append(path)
    single = fixed_seed(request)
    was_on = {lo.name: lo.enabled for lo in session.loras}
    loaded: dict[int, str] = {}

    def render(r: int, c: int) -> Any:
        if c not in loaded:
            for name in list(loaded.values()):
                session.remove_lora(name)
            loaded.clear()
            report = session.add_lora(files[c], strength, name=f"{listing.name}-grid-{c}")
            loaded[c] = report.adapter_name
        return render_cell(session, replace(single, prompt=prompts[r]), control, emit)

    for name in was_on:
        session.set_enabled(name, False)
    try:
        cells, complete = run_cells(len(prompts), len(states), render, control=control,
                                    cell_done=cell_done, emit=emit, by_column=True)
    finally:
        for name in loaded.values():
            session.remove_lora(name)
        for name, on in was_on.items():
            session.set_enabled(name, on)
    labels = run_labels(states, prompts, strength)
    return GridResult(compose(cells, *labels), cells, complete, *labels)


def run_labels(states: list[SavedState], prompts: list[str], strength: float
               ) -> tuple[list[str], list[str], str]:
    """(row labels, column labels, corner) of a grid over a run: prompts, steps, strength."""
    return list(prompts), [s.label for s in states], f"strength {strength:g}"


# ---------------------------------------------------------------------------- helpers
def _run_name(folder: Path) -> str:
    """The run's name: its config copy `<name>.toml` (with output.name = name), else the one
    LoRA name its files share."""
    configs = [p.stem for p in sorted(folder.glob("*.toml"))
               if _read_config(p).get("output", {}).get("name") == p.stem]
    names = configs or sorted({(_STEP_FILE.match(p.stem) or {"name": p.stem})["name"]
                               for p in folder.glob(f"*{SUFFIX}")})
    if len(names) == 1:
        return names[0]
    if not names:
        raise StudioError(f"{folder} holds no LoRA files of a training run.", _FIX_FOLDER)
    raise StudioError(f"{folder} holds several LoRAs: {', '.join(names)}.",
                      "Say which one (the CLI's --name NAME).")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def _alpha_of(config: dict[str, Any]) -> float | None:
    alpha = config.get("lora", {}).get("alpha")
    return float(alpha) if isinstance(alpha, (int, float)) and alpha > 0 else None


def _steps_of(path: Path) -> int | None:
    """The step a LoRA file was saved at (`ss_steps`), None when it does not say."""
    from lora_studio.core.lora.sft import read_header

    try:
        value = read_header(path).metadata.get("ss_steps", "")
    except LoraFormatError:
        return None
    return int(value) if str(value).isdigit() else None


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    root = folder / "checkpoints"
    found = []
    for child in root.iterdir() if root.is_dir() else []:
        match = _CHECKPOINT.match(child.name)
        if match and (child / CHECKPOINT_WEIGHTS).is_file():
            found.append((int(match["step"]), child))
    return sorted(found)
