"""The base model every tab uses: one observable choice, shared by Train, Mix and Generate.

`BaseModelChoice.spec` is what `core.models.loading.resolve_model` takes: None for the built-in
tiny model, a diffusers folder, a single-file checkpoint, or a hub repo id already in the local
cache. `set_spec` remembers it (QSettings, with a short list of recent ones) and emits `changed`;
the architecture (SD 1.x / 2.x / SDXL) is then worked out in the background from configs or the
file header (`resolve_model` reads no weights) and arrives as `described(text, ok)`. A spec
that cannot be used is reported there with the reason and the fix, and stays selected so the
user sees what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

from lora_studio.core.errors import error_text
from lora_studio.ui.workers import TaskPool

TINY_MODEL_LABEL = "Tiny Shapes (built-in)"
KEY_BASE = "model/base"
KEY_RECENT = "model/recent"
LEGACY_KEY_BASE = "train/base_model"  # where the Train tab kept it before the shared picker
MAX_RECENT = 8


def normal_spec(spec: Any) -> str | None:
    """None for the built-in model however it is spelled; other specs as stripped text."""
    if spec is None:
        return None
    text = str(spec).strip()
    return None if text.lower() in ("", "tiny", "builtin", "builtin-tiny") else text


def short_label(spec: Any) -> str:
    """What the status bar shows: the folder / file name, the repo id, or the tiny model."""
    from lora_studio.core.models.hub_cache import looks_like_repo_id

    spec = normal_spec(spec)
    if spec is None:
        return TINY_MODEL_LABEL
    path = Path(spec).expanduser()
    if looks_like_repo_id(spec) and not path.exists():
        return spec
    return path.name or spec


def describe_spec(spec: str | None) -> str:
    """"SD 1.x", "SDXL", ... for `spec` (reads configs / headers only). Raises StudioError."""
    return describe_arch(spec)[1]


def describe_arch(spec: str | None) -> tuple[str, str]:
    """(architecture, its name): ("sd1", "SD 1.x"), ("sdxl", "SDXL"), ... for `spec` (reads
    configs / headers only; the built-in model is "sd1"). Raises StudioError."""
    from lora_studio.core.models.architecture import ARCH_DISPLAY

    if spec is None:
        return "sd1", ARCH_DISPLAY["sd1"]
    from lora_studio.core.models.loading import resolve_model

    source = resolve_model(spec)
    return source.arch, ARCH_DISPLAY.get(source.arch, source.arch)


class BaseModelChoice(QObject):
    """The shared base model (see the module docstring)."""

    changed = Signal(object)  # the new spec (None = built-in tiny model)
    described = Signal(str, bool)  # architecture text, or the problem; ok

    def __init__(self, settings: QSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._pool = TaskPool(max_threads=1, parent=self)
        self._spec: str | None = None
        self._description = ""
        self._arch: str | None = None
        self._ok = True
        self._asked = 0  # which describe request is the current one (older answers dropped)
        if settings is not None:
            saved = settings.value(KEY_BASE, None)
            if saved is None:
                saved = settings.value(LEGACY_KEY_BASE, "")
            self._spec = normal_spec(saved)

    @property
    def spec(self) -> str | None:
        return self._spec

    @property
    def label(self) -> str:
        return short_label(self._spec)

    @property
    def description(self) -> str:
        """The architecture text ("SD 1.x") or the problem; "" while it is being worked out."""
        return self._description

    @property
    def arch(self) -> str | None:
        """"sd1", "sd2", "sd2-v" or "sdxl" (the built-in model is "sd1"); None while it is
        being worked out or when the model cannot be used. Known when `described` is emitted."""
        return self._arch

    @property
    def ok(self) -> bool:
        return self._ok

    def recent(self) -> list[str]:
        if self._settings is None:
            return []
        value = self._settings.value(KEY_RECENT, [])
        items = [value] if isinstance(value, str) else list(value or [])
        return [str(v) for v in items if str(v).strip()]

    def set_spec(self, spec: Any) -> None:
        """Use `spec` from now on (no-op when it is the current one)."""
        spec = normal_spec(spec)
        if spec == self._spec and self._description:
            return
        self._spec = spec
        self._description, self._arch = "", None  # until `described` says what it is
        if self._settings is not None:
            self._settings.setValue(KEY_BASE, spec or "")
            if spec is not None:
                recent = [spec] + [r for r in self.recent() if r != spec]
                self._settings.setValue(KEY_RECENT, recent[:MAX_RECENT])
        self.changed.emit(spec)
        self.describe()

    def describe(self) -> None:
        """Work out the architecture of the current spec in the background."""
        self._asked += 1
        asked, spec = self._asked, self._spec
        self._description, self._arch = "", None

        def done(text: str, ok: bool, arch: str | None = None) -> None:
            if asked == self._asked:
                self._description, self._ok, self._arch = text, ok, arch
                self.described.emit(text, ok)

        self._pool.submit(lambda: describe_arch(spec), lambda found: done(found[1], True, found[0]),
                          lambda exc: done(error_text(exc), False))

    def wait(self, timeout_ms: int = 10_000) -> bool:
        return self._pool.wait(timeout_ms)

    def shutdown(self) -> None:
        self._pool.shutdown()
