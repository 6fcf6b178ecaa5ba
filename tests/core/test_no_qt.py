"""The engine must never import Qt: it runs in the CLI, on clusters and in tests without one."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "lora_studio" / "core"


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_modules_never_import_qt():
    offenders = {
        str(path.relative_to(CORE)): sorted(m for m in _imported_modules(path)
                                            if m.split(".")[0] in {"PySide6", "PyQt5", "PyQt6",
                                                                   "pyqtgraph", "superqt"}
                                            or m.startswith("lora_studio.ui"))
        for path in CORE.rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert len(list(CORE.rglob("*.py"))) > 5  # the scan really looked at the engine
    assert offenders == {}
