"""User-facing errors: what happened and what to do about it.

Every failure a person can cause (a bad file, a wrong setting, a missing model) is raised as a
`StudioError`, so the CLI and the app can show `what` + `fix` instead of a traceback.
"""

from __future__ import annotations


class StudioError(Exception):
    """An error a person can act on: `what` happened and how to `fix` it."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def user_message(self) -> str:
        return f"{self.what}\n{self.fix}" if self.fix else self.what

    def __str__(self) -> str:
        return self.user_message()


def error_text(exc: BaseException) -> str:
    """What to show a person for `exc`: what + fix for a StudioError, else its type and text."""
    if isinstance(exc, StudioError):
        return exc.user_message()
    return f"{type(exc).__name__}: {exc}"


class ConfigError(StudioError):
    """An invalid or unknown configuration value; `key` names it (e.g. `train.learning_rate`)."""

    def __init__(self, key: str, what: str, fix: str = "") -> None:
        super().__init__(f"{key}: {what}", fix)
        self.key = key


class ModelLoadError(StudioError):
    """A base model could not be found, recognised or loaded."""


class DatasetError(StudioError):
    """The dataset cannot be used at all (no usable images, missing folder...)."""


class LoraFormatError(StudioError):
    """A LoRA file that cannot be read, is of an unsupported kind, or fits no module."""


class DeviceError(StudioError):
    """The requested device or precision is not available on this machine."""


class UnsafeFileError(StudioError):
    """A file that would need unsafe unpickling to load."""


class DiskFullError(StudioError, OSError):
    """A write failed because the disk (or the user's quota on it) is full. Also an OSError
    (errno ENOSPC or EDQUOT), so code that handles a failed write as an OSError still does;
    `strerror` is the whole sentence. Made by `fileio.disk_full_error`."""

    def __init__(self, what: str, fix: str = "", errno_: int | None = None) -> None:
        super().__init__(what, fix)
        self.errno = errno_
        self.strerror = what
