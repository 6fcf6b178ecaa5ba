"""The LoRA stack: one record per LoRA (`StackEntry`) and what reconciling a session with a
wanted stack reports (`StackReport`).

A stack is an ordered list of `StackEntry(path, weight, enabled, block_weights, start, name)`,
one per file (a file listed twice keeps its first entry; files are told apart by
`core.paths.path_key`). The Mix and Generate tabs, `lora-studio generate` and the serve API's
adapter pool all hold their LoRAs as these entries and hand the whole list to
`GenerationSession.set_stack(entries)`, the one place that makes a session's LoRAs match it:
files not loaded yet are loaded, LoRAs no longer listed are removed, and every changed
strength / on-off / block weights / start is applied in one adapter pass (a single weight change
re-scales only that LoRA's layers: no reload). A file that cannot be used does not stop the
others: it is left out and reported in `StackReport.errors` / `problems`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from lora_studio.core.errors import ConfigError, StudioError
from lora_studio.core.lora.block_weights import BlockWeights, normalized
from lora_studio.core.paths import path_key


@dataclass(frozen=True)
class StackEntry:
    """One LoRA of a stack: the file, its strength, whether it is switched on, its per-block
    factors (None: every block at `weight`), the share of the denoising steps before it comes in
    (0: from the first step), and its name (shown, and asked of the session as its adapter
    name; default: the file stem)."""

    path: Path
    weight: float = 1.0
    enabled: bool = True
    block_weights: BlockWeights | None = None
    start: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        path = Path(self.path)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "weight", float(self.weight))
        object.__setattr__(self, "enabled", bool(self.enabled))
        object.__setattr__(self, "block_weights", normalized(self.block_weights))
        object.__setattr__(self, "start", float(self.start))
        object.__setattr__(self, "name", self.name or path.stem)
        if not 0.0 <= self.start < 1.0:
            raise ConfigError("start", f"{self.start} is not a share of the steps.",
                              "Use 0 (from the first step) up to 0.95.")

    @property
    def key(self) -> str:
        """What tells files apart (`core.paths.path_key`)."""
        return path_key(self.path)

    def changed(self, **changes) -> StackEntry:
        return replace(self, **changes)


def unique_entries(entries: Iterable[StackEntry]) -> list[StackEntry]:
    """`entries` in order, each file once (its first entry)."""
    seen: set[str] = set()
    out: list[StackEntry] = []
    for entry in entries:
        if entry.key not in seen:
            seen.add(entry.key)
            out.append(entry)
    return out


@dataclass
class StackReport:
    """What `GenerationSession.set_stack` did.

    adapters: {file key: adapter name} of the stack's LoRAs loaded in the session, stack order.
    loaded: {file key: LoadReport} of the files this call loaded (matched / total modules).
    errors: {file key: StudioError} of the files left out (another architecture, damaged).
    pending: file keys not loaded yet (`set_stack(..., load=False)` never loads)."""

    adapters: dict[str, str] = field(default_factory=dict)
    loaded: dict[str, object] = field(default_factory=dict)
    errors: dict[str, StudioError] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    _names: dict[str, str] = field(default_factory=dict, repr=False)  # key -> file name

    @property
    def problems(self) -> dict[str, str]:
        """{file key: a sentence saying that the file was left out, and why}."""
        out = {}
        for key, exc in self.errors.items():
            file_name = self._names.get(key, "")
            said = exc.user_message().removeprefix(f"{file_name} ") if file_name else \
                exc.user_message()
            out[key] = f"{file_name or key} was left out: {said}"
        return out

    def adapter(self, path: str | Path) -> str | None:
        return self.adapters.get(path_key(path))

    def left_out(self, entry: StackEntry, exc: StudioError) -> None:
        self.errors[entry.key] = exc
        self._names[entry.key] = entry.path.name
