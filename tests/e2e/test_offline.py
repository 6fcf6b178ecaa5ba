"""Nothing reaches the network: the main commands and the window run in processes where every
Internet socket, datagram and name lookup is refused and logged (tests/no_network/
sitecustomize.py), without HF_HUB_OFFLINE or any other offline switch set for them. The studio
is offline by itself: models load with local_files_only, single-file checkpoints with the
shipped configs, and nothing phones home."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = ROOT / "tests" / "no_network"
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                    "DIFFUSERS_OFFLINE")

# The artist's path on the command line, in one process (imports once): a model, a dataset
# check, a short training run, and everything done with the LoRA it wrote.
COMMANDS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from lora_studio.cli import main

    work = Path(sys.argv[1])
    model, out, lora = work / "model", work / "out", work / "out" / "star.safetensors"
    data = sys.argv[2]
    runs = [
        ["make-tiny-model", str(model)],
        ["dataset", "check", data],
        ["dataset", "doctor", data],
        ["dataset", "preview", data, "--out", str(work / "preview")],
        ["advise", data, "--concept", "subject", "--model", str(model)],
        ["memory", sys.argv[3], "--set", f"model.base={model}"],
        ["train", sys.argv[3], "--set", f"model.base={model}", "--set", "train.steps=2",
         "--set", "train.batch_size=1", "--set", "dataset.resolution=32",
         "--set", "dataset.reg_path=", "--set", f"output.path={out}",
         "--set", "output.name=star", "--set", "sample.every=0"],
        ["inspect", str(lora)],
        ["convert", str(lora), "--format", "diffusers", "--out", str(work / "d.safetensors")],
        ["resize", str(lora), "--rank", "2", "--out", str(work / "r.safetensors")],
        ["merge", f"{lora}:0.5", f"{work / 'r.safetensors'}:0.5", "--out",
         str(work / "m.safetensors")],
        ["generate", "--model", str(model), "--lora", f"{lora}:0.8", "--prompt", "zqstar",
         "--steps", "2", "--width", "32", "--height", "32", "--out", str(work / "images")],
        ["fuse", "--model", str(model), "--lora", f"{lora}:1", "--out",
         str(work / "fused.safetensors")],
        ["grid", "--model", str(model), "--lora", str(lora), "--strengths", "0,1",
         "--prompt", "zqstar", "--steps", "2", "--out", str(work / "grid.png")],
    ]
    for argv in runs:
        code = main(argv)
        print("EXIT", code, argv[0], argv[1], flush=True)
""")

# The window as an artist opens it: warm-up, device probe and base-model prefetch run, then quit.
APP = textwrap.dedent("""
    from PySide6.QtCore import QTimer
    from lora_studio.ui.app import create_application, run_app
    from lora_studio.ui.main_window import MainWindow

    app = create_application([])

    def quit_when_warm(waited=[0]):
        windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow)]
        text = windows[0].status.device_label.text() if windows else ""
        ready = text and "checking" not in text
        waited[0] += 1
        if ready or waited[0] > 600:
            print("DEVICE", text, flush=True)
            QTimer.singleShot(2000, windows[0].close)
        else:
            QTimer.singleShot(100, quit_when_warm)

    QTimer.singleShot(100, quit_when_warm)
    raise SystemExit(run_app([]))
""")


def offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_SWITCHES}
    env.update(NO_NETWORK_LOG=str(tmp_path / "network.log"), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=os.pathsep.join(filter(None, [str(BLOCKER),
                                                         env.get("PYTHONPATH", "")])),
               HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
               HF_HOME=str(tmp_path / "home" / "hf"), OMP_NUM_THREADS="1")
    return env


def attempts(tmp_path: Path) -> str:
    log = tmp_path / "network.log"
    return log.read_text(encoding="utf-8") if log.exists() else ""


def test_the_blocker_catches_a_connection_even_when_it_is_swallowed(tmp_path):
    probe = ("import urllib.request\ntry:\n    urllib.request.urlopen('https://huggingface.co')\n"
             "except Exception:\n    pass\n")
    done = subprocess.run([sys.executable, "-c", probe], env=offline_env(tmp_path), timeout=60)
    assert done.returncode == 0
    assert "huggingface.co" in attempts(tmp_path)


@pytest.mark.slow
def test_the_main_commands_never_touch_the_network(tmp_path):
    sample = ROOT / "resources" / "sample_dataset"
    config = ROOT / "resources" / "presets" / "quickstart.toml"
    done = subprocess.run([sys.executable, "-c", COMMANDS, str(tmp_path), str(sample),
                           str(config)], env=offline_env(tmp_path), capture_output=True,
                          text=True, timeout=900, cwd=tmp_path)
    exits = [line.split() for line in done.stdout.splitlines() if line.startswith("EXIT")]
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(exits) == 14 and all(code == "0" for _, code, *_ in exits), (exits,
                                                                          done.stderr[-3000:])
    assert attempts(tmp_path) == ""


def test_the_window_never_touches_the_network(tmp_path):
    done = subprocess.run([sys.executable, "-c", APP], env=offline_env(tmp_path),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DEVICE Device: CPU" in done.stdout, done.stdout  # the warm-up ran to its end
    assert attempts(tmp_path) == ""
