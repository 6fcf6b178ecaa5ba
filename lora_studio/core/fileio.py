"""Atomic writes: a crash never leaves a half-written file in place of a good one.

File modes: `tempfile.mkstemp` creates its file 0600, so without a chmod every LoRA, PNG, TOML
and caption the studio writes would be unreadable by other users (A1111 in Docker, a NAS share),
and an edited 0644 caption would turn 0600. `atomic_path` therefore gives a new file the mode a
plain `open(path, "w")` would get (0o666 & ~umask) and a rewritten file its previous permission
bits. The temp file stays 0600 while it is being written and is chmod-ed just before the
`os.replace`, so nobody can read a half-written file either.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import tempfile
from pathlib import Path
from collections.abc import Callable, Iterator

_DEFAULT_FILE_MODE = 0o666  # what open(..., "w") asks for; the kernel then applies the umask


def _proc_umask() -> int | None:
    """The umask from /proc/self/status (Linux >= 4.7), or None where there is no such line.

    There is no call that only *reads* the umask: `os.umask()` sets a new one and returns the
    old. Setting and restoring it is racy in a threaded program (the studio writes from worker
    threads while the UI thread saves captions): another thread creating a file in between gets
    the temporary umask. Reading /proc changes nothing, so it is safe at any time, and it is read
    on every write so a umask changed later in the process is honoured."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.lru_cache(maxsize=1)
def _fallback_umask() -> int:
    """The umask by the set-and-restore trick, for systems without /proc (macOS, BSD, Windows).

    Done once and cached, so the race window described in `_proc_umask` opens only once per
    process. The probe value is 0o077, so a file another thread happens to create in that window
    comes out too private rather than world-writable."""
    current = os.umask(0o077)
    os.umask(current)
    return current


def _current_umask() -> int:
    mask = _proc_umask()
    return _fallback_umask() if mask is None else mask


def _final_mode(target: Path) -> int:
    """The permission bits the written file should end with: those of the file it replaces
    (without setuid/setgid/sticky), else those of a new file under the process umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except FileNotFoundError:  # new file (or a dangling symlink, which os.replace overwrites)
        return _DEFAULT_FILE_MODE & ~_current_umask()


def new_folder_mode() -> int:
    """The permission bits `os.mkdir` would give a folder under the process umask (a staging
    folder from `tempfile.mkdtemp` is 0700: chmod it to this before moving it into place)."""
    return 0o777 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success fsync it and `os.replace` it over
    the target. On any error the temp file is removed and the old target is untouched.

    The result has the target's previous permission bits when it existed, else the mode a plain
    `open(target, "w")` would give (0o666 & ~umask), not mkstemp's 0600 (see the module doc)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        mode = _final_mode(target)
        with open(tmp, "rb+") as handle:
            # chmod after the writer ran (it may have recreated the temp file) and before the
            # fsync, so the mode is on disk together with the data when the file appears.
            if os.chmod in os.supports_fd:
                os.chmod(handle.fileno(), mode)
            else:
                os.chmod(tmp, mode)
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_with(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Run `writer(tmp_path)` and move the result into place atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
