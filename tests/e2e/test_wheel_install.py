"""A real (non-editable) install: the wheel built from this source carries the built-in model,
configs, tokenizers, presets, sample data and style, and the installed `lora-studio` generates,
runs the quickstart training and opens the window from a folder outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PARTS = ("pyproject.toml", "setup.py", "README.md", "lora_studio", "resources")

OPEN_AND_CLOSE = textwrap.dedent("""
    from PySide6.QtCore import QTimer
    from lora_studio.ui.app import create_application, run_app
    from lora_studio.ui.main_window import MainWindow

    app = create_application([])

    def close_once_shown():
        windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow)]
        if windows and windows[0].isVisible():
            print("TABS", [windows[0].tabs.tabText(i) for i in range(windows[0].tabs.count())])
            print("MODEL", windows[0].status.model_label.text(), flush=True)
            QTimer.singleShot(500, windows[0].close)
        else:
            QTimer.singleShot(100, close_once_shown)

    QTimer.singleShot(100, close_once_shown)
    raise SystemExit(run_app([]))
""")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel built from a copy of the source, installed (no dependencies: this venv has
    them) into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for part in SOURCE_PARTS:
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, source / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / part, source / part)
    isolation = [] if _has_setuptools() else ["--use-pep517"]
    flags = ["--no-build-isolation"] if not isolation else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *flags, str(source),
                    "-w", str(work / "dist")], check=True, cwd=work, timeout=600)
    [wheel] = (work / "dist").glob("lora_studio-*.whl")
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, cwd=work, timeout=600)
    shutil.rmtree(source)  # nothing may come from the copy of the checkout
    home = work / "home"
    env = {**os.environ, "PYTHONPATH": str(target), "HOME": str(home),
           "LORA_STUDIO_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / ".config"),
           "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    return {"site": target, "env": env, "cwd": work, "script": target / "bin" / "lora-studio"}


def _has_setuptools() -> bool:
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return False
    return True


def run(installed: dict, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], env=installed["env"], cwd=installed["cwd"],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_wheel_carries_the_resources_and_is_what_runs(installed):
    resources = installed["site"] / "lora_studio" / "resources"
    for part in ("models/tiny-shapes", "configs/sd15/tokenizer", "configs/sdxl",
                 "presets/quickstart.toml", "sample_dataset", "sample_dataset_reg",
                 "style/studio.qss", "icons/lora-studio.svg", "icons/lora-studio-256.png"):
        assert (resources / part).exists(), part
    done = run(installed, "-c", "import lora_studio; from lora_studio.core.paths import "
                                "resources_dir; print(lora_studio.__file__); print(resources_dir())")
    assert done.returncode == 0, done.stderr
    module, found = done.stdout.split()
    assert Path(module).is_relative_to(installed["site"]) and Path(found) == resources


@pytest.mark.slow
def test_the_installed_command_generates_and_trains_the_quickstart(installed):
    script = str(installed["script"])
    done = run(installed, script, "generate", "--prompt", "a red circle", "--steps", "2",
               "--out", "images")
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((installed["cwd"] / "images").glob("*.png"))
    preset = installed["site"] / "lora_studio" / "resources" / "presets" / "quickstart.toml"
    done = run(installed, script, "train", str(preset), "--set", "train.steps=2",
               "--set", "dataset.reg_path=", "--set", "sample.every=0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (installed["cwd"] / "output" / "quickstart" / "zqstar.safetensors").is_file()


@pytest.mark.slow
def test_the_installed_window_opens_on_the_built_in_model(installed):
    done = run(installed, "-c", OPEN_AND_CLOSE, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TABS ['Dataset', 'Train', 'Mix', 'Generate']" in done.stdout, done.stdout
    assert "Tiny Shapes" in done.stdout, done.stdout


@pytest.mark.slow
def test_the_installed_command_adds_itself_to_the_desktop_menu(installed):
    """`lora-studio install-desktop` from the wheel: the entry starts that installed script and
    the icons are the wheel's; --remove takes them away again."""
    share = installed["cwd"] / "share"
    env = {**installed["env"], "XDG_DATA_HOME": str(share)}
    script = str(installed["script"])
    done = subprocess.run([sys.executable, script, "install-desktop"], env=env,
                          cwd=installed["cwd"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    entry = (share / "applications" / "lora-studio.desktop").read_text(encoding="utf-8")
    assert f"\nExec={script}\n" in entry, entry
    icon = share / "icons" / "hicolor" / "256x256" / "apps" / "lora-studio.png"
    shipped = installed["site"] / "lora_studio" / "resources" / "icons" / "lora-studio-256.png"
    assert icon.read_bytes() == shipped.read_bytes()
    done = subprocess.run([sys.executable, script, "install-desktop", "--remove"], env=env,
                          cwd=installed["cwd"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not icon.exists() and not (share / "applications" / "lora-studio.desktop").exists()
