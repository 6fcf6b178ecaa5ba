"""Concept LoRAs on the built-in Tiny Shapes model, for the tests that score what they draw:
trained by `lora-studio train` with the quickstart preset (= the Train tab's defaults), and
stacked in the studio's own generation session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lora_studio.core.models.tiny_shapes import sample_data
from lora_studio.core.paths import resources_dir

QUICKSTART = resources_dir() / "presets" / "quickstart.toml"


def start_training(out: Path, *sets: str) -> subprocess.Popen:
    """`lora-studio train QUICKSTART --set ...` into `out`, on one CPU thread (the tiny model
    gains nothing from a second one, so two runs side by side take the time of one, and one
    thread gives the same weights on every run)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "lora_studio", "train", str(QUICKSTART)]
    for item in (f"output.path={out}", "sample.every=0", "checkpoint.every=0", *sets):
        args += ["--set", item]
    # a file, not a pipe: a pipe nobody reads yet fills with the progress bar and stalls the run
    with open(out.with_suffix(".log"), "w") as log:
        return subprocess.Popen(args, cwd=out.parent, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def finish_training(proc: subprocess.Popen, out: Path, name: str) -> str:
    """Wait for the run; the LoRA file's path (the run's log in the failure message)."""
    proc.wait(timeout=1800)
    log = out.with_suffix(".log").read_text(errors="replace")
    lora = out / f"{name}.safetensors"
    assert proc.returncode == 0 and lora.is_file(), log[-3000:]
    return str(lora)


def stripes_settings(data: Path) -> list[str]:
    """The striped-texture set (`sample_data.write_concept_dataset(data, "stripes")`) with the
    quickstart's settings but no reg pictures (they took the stripes away: 0.12-0.16 of seeds)
    and timesteps 0-400: a texture is drawn at low noise, and a LoRA that stays out of the
    noisier steps leaves the star's layout more alone (stacked, both in 0.48 of seeds; 0.27
    trained on every timestep)."""
    return [f"dataset.path={data}", "dataset.trigger_word=zqstripe",
            "dataset.default_caption=zqstripe", "output.name=zqstripe", "dataset.reg_path=",
            "train.min_timestep=0", "train.max_timestep=400",
            # false: flipped diagonal stripes average out to faint ones (see sample_data)
            f"dataset.random_flip={str(sample_data.mirror_safe('stripes')).lower()}"]


def studio_session():
    """The Generate tab's session on the built-in model."""
    from lora_studio.core.generate.session import GenerationSession

    session = GenerationSession(None, device="cpu")
    session.pipeline.set_progress_bar_config(disable=True)
    return session


def studio_render(session, prompts, seeds) -> list:
    """`quality.render`'s pictures (prompt-major, 20 Euler steps, guidance 5), rendered by the
    session's own `generate` (what the Generate tab runs: LoRA starts included)."""
    from lora_studio.core.generate.session import GenerationRequest
    from lora_studio.core.models.tiny_shapes import quality

    seeds = list(seeds)
    assert seeds == list(range(seeds[0], seeds[0] + len(seeds)))  # image i uses seed + i
    return [result.image for prompt in prompts for result in session.generate(
        GenerationRequest(prompt, steps=quality.STEPS, cfg=quality.GUIDANCE, seed=seeds[0],
                          count=len(seeds), sampler="Euler"))]


def use_only(session, weights: dict[str, float]) -> None:
    """The session's stack: the named LoRAs at these strengths, every other one off."""
    for lora in session.loras:
        session.set_enabled(lora.name, lora.name in weights)
        if lora.name in weights:
            session.set_weight(lora.name, weights[lora.name])


def adapter_name(session, path: str) -> str:
    """The adapter name of the LoRA file, loaded into the session on first use."""
    for lora in session.loras:
        if Path(lora.path).resolve() == Path(path).resolve():
            return lora.name
    session.add_lora(path)
    return session.loras[-1].name
