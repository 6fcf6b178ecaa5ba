"""Atomic writes: a crash never leaves a half-written file in place of a good one.

File modes: `tempfile.mkstemp` creates its file 0600, so without a chmod every LoRA, PNG, TOML
and caption the studio writes would be unreadable by other users (A1111 in Docker, a NAS share),
and an edited 0644 caption would turn 0600. `atomic_path` therefore gives a new file the mode a
plain `open(path, "w")` would get (0o666 & ~umask) and a rewritten file its previous permission
bits. The temp file stays 0600 while it is being written and is chmod-ed just before the
`os.replace`, so nobody can read a half-written file either.

A full disk: a write that fails with ENOSPC / EDQUOT (however the library doing the writing
words it) leaves the previous file intact, removes the temp file and raises `DiskFullError`
saying which disk is full, how much is free and what to do (`disk_full_error`). Tests make a
disk "full" by replacing `write_fault_hook`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from collections.abc import Callable, Iterator

from lora_studio.core.errors import DiskFullError, StudioError

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


def write_fault_hook(tmp: Path, target: Path) -> None:
    """Fault-injection seam, for tests only: `atomic_path` calls it once the writer has filled
    the temp file `tmp` (destined for `target`), before the fsync and the rename. It does
    nothing. A test replaces it (`monkeypatch.setattr(fileio, "write_fault_hook", hook)`) with
    one that raises `OSError(errno.ENOSPC, ...)` to act as a full disk at that moment."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success fsync it and `os.replace` it over
    the target. On any error the temp file is removed and the old target is untouched; an error
    from a full disk becomes `DiskFullError` (see the module doc).

    The result has the target's previous permission bits when it existed, else the mode a plain
    `open(target, "w")` would give (0o666 & ~umask), not mkstemp's 0600 (see the module doc)."""
    target = Path(target)
    kept = f"{target.name} was not written (an earlier {target.name}, if any, is unchanged)."
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(target.parent, exc, kept) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    full = None
    try:
        yield tmp
        write_fault_hook(tmp, target)
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
    except Exception as exc:
        if isinstance(exc, StudioError) or not is_disk_full(exc, target.parent):
            raise
        full = exc  # said once the temp file is gone, so the free space shown is real
    finally:
        if tmp.exists():
            tmp.unlink()
    if full is not None:
        raise disk_full_error(target.parent, full, kept) from full


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_with(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Run `writer(tmp_path)` and move the result into place atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)


def replace_folder(staging: str | os.PathLike[str], target: str | os.PathLike[str],
                   trash: str | os.PathLike[str] | None = None) -> None:
    """Move the complete folder `staging` to `target` (same parent folder), replacing any
    folder there without ever leaving half of one under `target`'s name. On Linux the two are
    swapped in one step (then `staging` holds the old folder and is deleted), so `target` is
    never missing either; elsewhere the old folder is renamed out of the way first (to
    `trash`, default `.<name>.<random>.old`) and deleted after."""
    staging, target = Path(staging), Path(target)
    if target.is_dir() and not target.is_symlink() and _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = None
    if target.exists():
        old = Path(trash) if trash is not None else \
            target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
        if old.exists():
            shutil.rmtree(old)  # left by a crash in an earlier replacement
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`); False where the system
    or the file system cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc < 2.28, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


# ------------------------------------------------------------------ a full disk
_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e)
# How the libraries that write for us word it: Python's OSError text, Rust's (safetensors).
_FULL_WORDS = tuple(words for e in _FULL_ERRNOS
                    for words in (os.strerror(e), f"os error {e})"))
LOW_SPACE_BYTES = 1 << 20  # below this much free, a failed write is taken for a full disk


def is_disk_full(exc: BaseException, folder: str | os.PathLike[str] | None = None) -> bool:
    """True when `exc` (or an exception it was raised from) is a write failing on a full disk
    or quota: errno ENOSPC / EDQUOT, or their wording in the message (safetensors raises its
    own error type with only the words). With `folder`, also an OSError or RuntimeError while
    under LOW_SPACE_BYTES are free there (torch.save says only "unexpected pos N vs M")."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in _FULL_ERRNOS:
            return True
        if any(words in str(link) for words in _FULL_WORDS):
            return True
        link = link.__cause__ or link.__context__
    if folder is None or not isinstance(exc, (OSError, RuntimeError)):
        return False
    free = free_bytes(folder)
    return free is not None and free < LOW_SPACE_BYTES


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """The bytes free to this user on the disk holding `folder` (or its nearest existing
    parent); None when that cannot be told."""
    path = Path(folder).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_full_error(folder: str | os.PathLike[str], exc: BaseException | None = None,
                    kept: str = "") -> DiskFullError:
    """The error to raise when writing into `folder` failed on a full disk (or quota): which
    disk, how much is free now, what was kept (`kept`, a sentence) and what to do."""
    quota = getattr(errno, "EDQUOT", None)
    code = getattr(exc, "errno", None)
    if code is None and exc is not None and quota and os.strerror(quota) in str(exc):
        code = quota
    free = free_bytes(folder)
    shown = "an unknown amount" if free is None else _size_text(free)
    if code is not None and code == quota:
        what = f"Your disk quota is used up on the disk holding {folder} ({shown} free there)."
    else:
        what = f"The disk holding {folder} is full ({shown} free)."
    fix = ((kept + " ") if kept else "") + ("Free some space on that disk, or choose a folder "
                                            "on another disk for the output, then try again.")
    return DiskFullError(what, fix, code if code in _FULL_ERRNOS else errno.ENOSPC)


def _size_text(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
