"""`lora-studio train` end to end in subprocesses: JSON events, Ctrl+C, several processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_studio.core.paths import resources_dir

QUICKSTART = resources_dir() / "presets" / "quickstart.toml"
FAST = ["--set", "dataset.resolution=32", "--set", "train.batch_size=1",
        "--set", "sample.steps=2", "--set", "sample.prompts=[\"zqstar\"]",
        "--set", "lora.targets=attention", "--set", "checkpoint.every=0"]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_quickstart_cli_with_events_json_writes_under_cwd(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lora_studio", "train", str(QUICKSTART), "--events-json",
         *FAST, "--set", "train.steps=4", "--set", "sample.every=2", "--set", "train.warmup_steps=1"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = _events(proc.stdout)  # every stdout line is one JSON event
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "Finished" and kinds.count("Finished") == 1
    progress = [e for e in events if e["event"] == "StepProgress"]
    assert [e["step"] for e in progress] == [1, 2, 3, 4]
    remaining = [e["total_steps"] - e["step"] for e in progress]
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] == 0
    assert all(e["eta_s"] >= 0 and e["it_per_s"] > 0 for e in progress)
    assert any(e["event"] == "Preview" and e["step"] == 2 for e in events)
    saved = [e for e in events if e["event"] == "LoraSaved" and e["final"]]
    lora = tmp_path / "output" / "quickstart" / "zqstar.safetensors"
    assert [Path(e["path"]) for e in saved] == [lora] and lora.is_file()
    assert (tmp_path / "output" / "quickstart" / "zqstar.toml").is_file()
    assert "progress" not in proc.stdout  # no progress bar among the JSON lines


@pytest.mark.slow
def test_progress_bar_and_where_the_lora_was_saved(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lora_studio", "train", str(QUICKSTART), *FAST,
         "--set", "train.steps=2", "--set", "sample.every=0", "--set", "train.warmup_steps=0",
         "--set", f"output.path={tmp_path / 'o'}"],
        env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2/2" in proc.stderr and "loss=" in proc.stderr  # the tqdm bar, on stderr
    assert str(tmp_path / "o" / "zqstar.safetensors") in proc.stdout


def test_config_errors_exit_2_naming_the_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lora_studio", "train", str(QUICKSTART),
         "--set", "train.learning_rate=-1"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "train.learning_rate: must be > 0, got -1" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "lora_studio", "train", str(QUICKSTART), "--events-json",
         "--set", "train.mixed_precision=fp16"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    [failed] = _events(proc.stdout)[-1:]
    assert failed["event"] == "Failed" and "train.mixed_precision" in failed["message"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT semantics differ on Windows")
def test_ctrl_c_stops_after_the_step_saves_and_exits_130(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lora_studio", "train", str(QUICKSTART), "--events-json", *FAST,
         "--set", "train.steps=2000", "--set", "sample.every=0"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        if '"StepProgress"' in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline
    rest, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    events = _events("".join(lines) + rest)
    last_step = max(e["step"] for e in events if e["event"] == "StepProgress")
    assert last_step <= 3
    assert events[-1]["event"] == "Cancelled"
    lora = tmp_path / "output" / "quickstart" / "zqstar.safetensors"
    assert lora.is_file() and str(lora) in events[-1]["message"]


@pytest.mark.slow
def test_accelerate_launch_on_two_cpu_processes_writes_one_lora(tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.run(
        # On a machine without CUDA, `--multi_gpu` starts torchrun workers that train on the CPU
        # with gloo (accelerate's `--cpu` flag alone launches one process unless mpirun is set).
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "lora_studio", "train", str(QUICKSTART), "--events-json", *FAST,
         "--set", "train.steps=3", "--set", "sample.every=2", "--set", "train.warmup_steps=0",
         "--set", "checkpoint.every=2", "--set", f"output.path={out}"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = _events(proc.stdout)
    kinds = [e["event"] for e in events]
    assert kinds.count("Finished") == 1  # only the main process emits
    assert kinds.count("JobStarted") == 1
    assert [e["step"] for e in events if e["event"] == "StepProgress"] == [1, 2, 3]
    assert "2 process(es)" in events[kinds.index("JobStarted")]["message"]
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["zqstar.safetensors"]
    ckpt = out / "checkpoints" / "step-2"
    assert {"noise_rng_0.safetensors", "noise_rng_1.safetensors"} <= {p.name for p in
                                                                      ckpt.iterdir()}
