"""`lora-studio install-desktop [--remove]`: the XDG menu entry and hicolor icons for this user,
with an Exec line that starts this install, written atomically and removed exactly."""

from __future__ import annotations

import configparser
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.cli import main
from lora_studio.core import desktop, fileio
from lora_studio.core.errors import DiskFullError, StudioError
from lora_studio.core.paths import resources_dir

REAL_PATH = os.environ.get("PATH", "")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """HOME and XDG_DATA_HOME in tmp; PATH without the desktop tools unless a test adds some."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return tmp_path


def entry_of(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def split_exec(value: str) -> list[str]:
    """The Desktop Entry spec's reading of an Exec value (independent of desktop.py): string
    escapes first, then arguments split on spaces, double-quoted ones unescaped, `%%` -> `%`."""
    text, i = "", 0
    while i < len(value):  # the string-type escapes
        if value[i] == "\\" and i + 1 < len(value):
            text += {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[value[i + 1]]
            i += 2
        else:
            text += value[i]
            i += 1
    args, current, quoted, i, started = [], "", False, 0, False
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            assert text[i + 1] in '"`$\\', f"bad escape in {text!r}"
            current, i = current + text[i + 1], i + 2
            continue
        if ch == '"':
            quoted, started = not quoted, True
        elif ch == " " and not quoted:
            if started:
                args.append(current)
            current, started = "", False
        else:
            assert quoted or ch not in desktop._RESERVED, f"unquoted {ch!r} in {text!r}"
            current, started = current + ch, True
        i += 1
    assert not quoted
    if started:
        args.append(current)
    return [a.replace("%%", "%") for a in args]


def fake_tool(home: Path, name: str, code: int = 0) -> Path:
    """A stand-in for a desktop tool on PATH: logs its arguments, exits with `code`."""
    log = home / f"{name}.log"
    script = home / "bin" / name
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\necho "{name} said no" >&2\n'
                      f"exit {code}\n")
    script.chmod(0o755)
    return log


def test_install_writes_the_entry_and_the_icons_under_xdg_data_home(home):
    change = desktop.install_desktop_entry(["/opt/lora studio/lora-studio"])
    data = home / "data"
    entry_path = data / "applications" / "lora-studio.desktop"
    icons = {data / "icons/hicolor" / f"{n}x{n}/apps/lora-studio.png": f"lora-studio-{n}.png"
             for n in (48, 128, 256)}
    icons[data / "icons/hicolor/scalable/apps/lora-studio.svg"] = "lora-studio.svg"
    assert sorted(change.written) == sorted([entry_path, *icons])
    for target, source in icons.items():
        assert target.read_bytes() == (resources_dir() / "icons" / source).read_bytes()
    entry = entry_of(entry_path)
    assert entry["Type"] == "Application" and entry["Name"] == "LoRA Studio"
    assert entry["Icon"] == "lora-studio" and entry["Categories"] == "Graphics;"
    assert entry["StartupWMClass"] == "LoRA Studio" and entry["Terminal"] == "false"
    assert split_exec(entry["Exec"]) == ["/opt/lora studio/lora-studio"]
    assert entry["TryExec"] == "/opt/lora studio/lora-studio"
    assert not (home / "home").exists()  # nothing went to ~/.local/share


@pytest.mark.parametrize("xdg", [None, "", "relative/data"])
def test_without_a_usable_xdg_data_home_it_is_home_local_share(home, monkeypatch, xdg):
    if xdg is None:
        monkeypatch.delenv("XDG_DATA_HOME")
    else:
        monkeypatch.setenv("XDG_DATA_HOME", xdg)
    monkeypatch.chdir(home)
    desktop.install_desktop_entry(["/usr/bin/lora-studio"])
    share = home / "home" / ".local" / "share"
    assert (share / "applications" / "lora-studio.desktop").is_file()
    assert (share / "icons/hicolor/256x256/apps/lora-studio.png").is_file()
    assert not (home / "relative").exists()


def test_the_icons_are_the_sizes_their_names_say(home):
    for n in (48, 128, 256):
        with Image.open(resources_dir() / "icons" / f"lora-studio-{n}.png") as image:
            assert image.size == (n, n) and image.mode == "RGBA"
    svg = (resources_dir() / "icons" / "lora-studio.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and 'viewBox="0 0 256 256"' in svg


@pytest.mark.parametrize("arg", [
    "/plain/path/lora-studio",
    "/home/me/my apps/lora-studio",
    '/odd/"quote"/$HOME/`tick`/back\\slash/100%/lora-studio',
    "/tab\there/semi;colon/&amp/(paren)/lora-studio",
])
def test_exec_quoting_reads_back_as_the_same_arguments(arg):
    command = [arg, "-m", "lora_studio"]
    line = " ".join(desktop.exec_quote(a) for a in command)
    assert "\t" not in line and "\n" not in line
    assert split_exec(line) == command


def test_the_entry_runs_the_lora_studio_script_that_is_running(home, monkeypatch):
    """Through the CLI, as `lora-studio install-desktop` from a folder with a space: the Exec
    line is that script, and running it (with --help instead of the window) is this install."""
    scripts = home / "my venv" / "bin"
    scripts.mkdir(parents=True)
    script = scripts / "lora-studio"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom lora_studio.cli import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "install-desktop"])
    assert main(["install-desktop"]) == 0
    command = split_exec(entry_of(home / "data/applications/lora-studio.desktop")["Exec"])
    assert command == [str(script)]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": os.defpath})
    assert done.returncode == 0, done.stderr
    assert "install-desktop" in done.stdout


def test_a_bare_script_name_is_found_on_path(home, monkeypatch):
    script = home / "bin" / "lora-studio"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert desktop.launch_command("lora-studio") == [str(script)]


@pytest.mark.parametrize("argv0", ["-c", "/somewhere/lora_studio/__main__.py", "",
                                   "/missing/lora-studio"])
def test_without_the_script_it_is_this_python_dash_m(home, argv0):
    command = desktop.launch_command(argv0)
    assert command == [str(Path(sys.executable).absolute()), "-m", "lora_studio"]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "install-desktop" in done.stdout, done.stderr


def test_remove_deletes_exactly_what_install_wrote(home, capsys):
    data = home / "data"
    others = [data / "applications" / "other.desktop",
              data / "icons/hicolor/48x48/apps/other.png",
              data / "icons/hicolor/scalable/apps/other.svg"]
    for other in others:
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_text("someone else's")
    written = desktop.install_desktop_entry(["/usr/bin/lora-studio"]).written
    capsys.readouterr()
    assert main(["install-desktop", "--remove"]) == 0
    out = capsys.readouterr().out
    for path in written:
        assert not path.exists() and f"Removed {path}" in out
    assert all(other.read_text() == "someone else's" for other in others)
    assert (data / "icons/hicolor/256x256/apps").is_dir()  # folders stay
    assert main(["install-desktop", "--remove"]) == 0
    assert "Nothing to remove" in capsys.readouterr().out


def test_an_install_that_fails_to_write_keeps_the_earlier_entry(home, monkeypatch):
    desktop.install_desktop_entry(["/old/lora-studio"])
    entry_path = home / "data/applications/lora-studio.desktop"
    before = entry_path.read_bytes()

    def full_disk(tmp, target):
        if target.name.endswith(".desktop"):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio, "write_fault_hook", full_disk)
    with pytest.raises(DiskFullError):
        desktop.install_desktop_entry(["/new/lora-studio"])
    assert entry_path.read_bytes() == before
    assert os.listdir(entry_path.parent) == ["lora-studio.desktop"]  # no temp file left


def with_caches(home: Path) -> None:
    """The user's applications and hicolor folders, each with its cache (as a desktop that
    uses them has)."""
    for folder, cache in (("applications", "mimeinfo.cache"), ("icons/hicolor", "icon-theme.cache")):
        (home / "data" / folder).mkdir(parents=True)
        (home / "data" / folder / cache).write_bytes(b"old")


def test_missing_desktop_tools_are_a_note_not_an_error(home, capsys):
    with_caches(home)
    assert main(["install-desktop"]) == 0
    out = capsys.readouterr().out
    assert "Note: update-desktop-database not found; skipped" in out
    assert "Note: gtk-update-icon-cache not found; skipped" in out
    assert "Wrote " in out


def test_no_cache_is_made_where_there_was_none(home):
    apps_log = fake_tool(home, "update-desktop-database")
    icons_log = fake_tool(home, "gtk-update-icon-cache")
    change = desktop.install_desktop_entry(["/usr/bin/lora-studio"])
    assert not apps_log.exists() and not icons_log.exists() and not change.notes
    assert sorted(os.listdir(home / "data/applications")) == ["lora-studio.desktop"]


def test_failing_desktop_tools_are_ignored_with_a_note(home):
    with_caches(home)
    apps_log = fake_tool(home, "update-desktop-database", code=1)
    icons_log = fake_tool(home, "gtk-update-icon-cache", code=1)
    change = desktop.install_desktop_entry(["/usr/bin/lora-studio"])
    assert apps_log.read_text().split() == ["-q", str(home / "data/applications")]
    assert icons_log.read_text().split() == ["-f", "-t", "-q", str(home / "data/icons/hicolor")]
    for tool in ("update-desktop-database", "gtk-update-icon-cache"):
        assert f"{tool} failed (exit 1: {tool} said no); ignored." in change.notes
    assert (home / "data/applications/lora-studio.desktop").is_file()


def test_existing_caches_are_refreshed_on_install_and_remove(home):
    with_caches(home)
    hicolor = home / "data/icons/hicolor"
    apps_log = fake_tool(home, "update-desktop-database")
    icons_log = fake_tool(home, "gtk-update-icon-cache")
    desktop.install_desktop_entry(["/usr/bin/lora-studio"])
    desktop.remove_desktop_entry()
    assert icons_log.read_text().splitlines() == [f"-f -t -q {hicolor}"] * 2
    assert apps_log.read_text().splitlines() == [f"-q {home / 'data/applications'}"] * 2


def test_the_entry_passes_desktop_file_validate(home):
    validate = shutil.which("desktop-file-validate", path=REAL_PATH)
    if validate is None:
        pytest.skip("desktop-file-validate is not installed here")
    desktop.install_desktop_entry(["/opt/my apps/lora-studio", "-m", "lora_studio"])
    done = subprocess.run([validate, str(home / "data/applications/lora-studio.desktop")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_on_windows_and_macos_it_says_what_to_do_instead(home, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(StudioError, match="Linux"):
        desktop.install_desktop_entry()
    assert main(["install-desktop"]) == 2
    assert "error: install-desktop makes a Linux" in capsys.readouterr().err
    assert not (home / "data").exists()


def test_the_committed_icons_are_what_make_icons_draws():
    import importlib.util

    import numpy as np

    path = Path(__file__).resolve().parents[2] / "packaging" / "make_icons.py"
    spec = importlib.util.spec_from_file_location("make_icons", path)
    make_icons = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_icons)
    icons = resources_dir() / "icons"
    assert (icons / "lora-studio.svg").read_text(encoding="utf-8") == make_icons.svg_text()
    for n in make_icons.SIZES:
        drawn = np.asarray(make_icons.draw(n), dtype=int)
        with Image.open(icons / f"lora-studio-{n}.png") as image:
            committed = np.asarray(image.convert("RGBA"), dtype=int)
        assert np.abs(drawn - committed).max() <= 2, n
