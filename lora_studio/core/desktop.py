"""`lora-studio install-desktop`: a menu entry and icon for the current user (Linux, XDG).

Writes `$XDG_DATA_HOME/applications/lora-studio.desktop` (default `~/.local/share`) and the
icon into the hicolor theme there (`icons/hicolor/<N>x<N>/apps/lora-studio.png` and
`scalable/apps/lora-studio.svg`). The entry starts the `lora-studio` command that is running
now (or `python -m lora_studio` with this interpreter when there is none, or the frozen app),
so a menu click opens the same install. `remove_desktop_entry` deletes exactly those files.

The window matches the entry by `StartupWMClass` (the X11 WM_CLASS class, which Qt takes from
the application name, `ui.settings.APP_NAME`) and on Wayland by the app id (Qt takes it from
`QGuiApplication.desktopFileName`, set to `DESKTOP_ID` in `ui.app.create_application`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.core.errors import StudioError
from lora_studio.core.fileio import atomic_write_bytes, atomic_write_text
from lora_studio.core.paths import resources_dir

DESKTOP_ID = "lora-studio"
WM_CLASS = "LoRA Studio"  # = ui.settings.APP_NAME (core does not import the ui)
ICON_SIZES = (48, 128, 256)
# Characters that make the Desktop Entry spec require an Exec argument to be quoted.
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


@dataclass
class DesktopChange:
    """What install/remove did: files written or removed, and notes (tools skipped, failed)."""

    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def data_home() -> Path:
    """$XDG_DATA_HOME when set to an absolute path (the spec ignores a relative one), else
    ~/.local/share."""
    value = os.environ.get("XDG_DATA_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / ".local" / "share"


def desktop_file(base: Path | None = None) -> Path:
    return (base or data_home()) / "applications" / f"{DESKTOP_ID}.desktop"


def icon_files(base: Path | None = None) -> dict[Path, Path]:
    """Where each shipped icon goes in the user's hicolor theme: {target: source}."""
    hicolor = (base or data_home()) / "icons" / "hicolor"
    icons = resources_dir() / "icons"
    files = {hicolor / f"{n}x{n}" / "apps" / f"{DESKTOP_ID}.png": icons / f"{DESKTOP_ID}-{n}.png"
             for n in ICON_SIZES}
    files[hicolor / "scalable" / "apps" / f"{DESKTOP_ID}.svg"] = icons / f"{DESKTOP_ID}.svg"
    return files


def launch_command(argv0: str | None = None) -> list[str]:
    """How a menu click starts this install: the frozen app itself; else the `lora-studio`
    script that is running (argv[0], found on PATH when given bare, made absolute); else this
    interpreter with `-m lora_studio` (e.g. when run as `python -m lora_studio`)."""
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).absolute())]
    argv0 = sys.argv[0] if argv0 is None else argv0
    if argv0 and Path(argv0).name.startswith(DESKTOP_ID):
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found and Path(found).is_file() and os.access(found, os.X_OK):
            # absolute, not resolved: a link (~/.local/bin/lora-studio) keeps working when the
            # install behind it is replaced
            return [str(Path(found).absolute())]
    # sys.executable is not resolved either: in a virtual environment it is a link whose
    # location is what selects the environment.
    return [str(Path(sys.executable).absolute()), "-m", "lora_studio"]


def exec_quote(arg: str) -> str:
    """One Exec= argument, quoted by the Desktop Entry spec: `%` doubled; an argument with a
    reserved character in double quotes, with `"`, `` ` ``, `$` and `\\` backslash-escaped;
    then every backslash doubled again, as the value is also an escaped string."""
    arg = arg.replace("%", "%%")
    if any(ch in _RESERVED for ch in arg):
        inner = "".join("\\" + ch if ch in '"`$\\' else ch for ch in arg)
        arg = f'"{inner}"'
    return _string_value(arg)


def _string_value(text: str) -> str:
    """A desktop-file string value: backslash, newline, tab and return escaped."""
    for raw, escaped in (("\\", "\\\\"), ("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r")):
        text = text.replace(raw, escaped)
    return text


def desktop_entry_text(command: list[str]) -> str:
    """The `.desktop` file for `command` (the argv that opens the window)."""
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.4",  # 1.5 is unknown to desktop-file-utils < 0.27
        "Name=LoRA Studio",
        "GenericName=LoRA Trainer",
        "Comment=Train, mix and generate with Stable Diffusion LoRAs",
        f"Exec={' '.join(exec_quote(a) for a in command)}",
        f"TryExec={_string_value(command[0])}",
        f"Icon={DESKTOP_ID}",
        "Terminal=false",
        "Categories=Graphics;",
        "Keywords=LoRA;Stable Diffusion;training;image;",
        "StartupNotify=true",
        f"StartupWMClass={WM_CLASS}",
    ]
    return "\n".join(lines) + "\n"


def install_desktop_entry(command: list[str] | None = None) -> DesktopChange:
    """Write the menu entry and icons for the current user (replacing an earlier one)."""
    _require_linux()
    base = data_home()
    change = DesktopChange()
    for target, source in icon_files(base).items():
        atomic_write_bytes(target, _read_icon(source))
        change.written.append(target)
    entry = desktop_file(base)
    atomic_write_text(entry, desktop_entry_text(command or launch_command()))
    change.written.append(entry)
    _refresh_caches(base, change)
    return change


def remove_desktop_entry() -> DesktopChange:
    """Delete the files `install_desktop_entry` writes; folders and other apps' files stay."""
    _require_linux()
    base = data_home()
    change = DesktopChange()
    for path in [desktop_file(base), *icon_files(base)]:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        change.removed.append(path)
    if not change.removed:
        change.notes.append(f"Nothing to remove: no LoRA Studio menu entry in {base}.")
        return change
    _refresh_caches(base, change)
    return change


def _require_linux() -> None:
    if sys.platform.startswith(("win", "darwin")):
        raise StudioError("install-desktop makes a Linux (XDG) menu entry; this is "
                          f"{sys.platform}.",
                          "Start the studio with `lora-studio` (no command), or use the "
                          "packaged app for your system (see packaging/README.md).")


def _read_icon(source: Path) -> bytes:
    try:
        return source.read_bytes()
    except OSError as exc:
        raise StudioError(f"The icon {source} is missing ({exc.strerror}).",
                          "Reinstall LoRA Studio; its resources folder is incomplete.") from exc


def _refresh_caches(base: Path, change: DesktopChange) -> None:
    """Tell the desktop about the change where the tools exist. A cache is refreshed only where
    one is in use, so no file beyond ours is made: the applications folder's mimeinfo.cache
    (update-desktop-database) and the hicolor folder's icon-theme.cache (gtk-update-icon-cache,
    also where an index.theme is); the hicolor folder's time is touched, which is what makes a
    running desktop look again. A missing or failing tool is only a note."""
    apps = base / "applications"
    hicolor = base / "icons" / "hicolor"
    if (apps / "mimeinfo.cache").exists():
        _run_tool(["update-desktop-database", "-q", str(apps)], change)
    if hicolor.is_dir():
        os.utime(hicolor)
        if (hicolor / "icon-theme.cache").exists() or (hicolor / "index.theme").exists():
            _run_tool(["gtk-update-icon-cache", "-f", "-t", "-q", str(hicolor)], change)


def _run_tool(argv: list[str], change: DesktopChange) -> None:
    if shutil.which(argv[0]) is None:
        change.notes.append(f"{argv[0]} not found; skipped (the menu picks the change up "
                            "at the next login at the latest).")
        return
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        change.notes.append(f"{argv[0]} could not run ({exc}); ignored.")
        return
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        change.notes.append(f"{argv[0]} failed (exit {done.returncode}"
                            f"{': ' + said[-1] if said else ''}); ignored.")
