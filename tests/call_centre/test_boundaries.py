"""The example is a relying party: of backchannel it uses only the client library."""

from __future__ import annotations

import ast
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "call_centre"


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_panel_imports_nothing_of_the_server() -> None:
    found = {
        f"{path.name}: {name}"
        for path in EXAMPLE.glob("*.py")
        for name in _imported(path)
        if name.split(".")[0] == "backchannel" and not name.startswith("backchannel.rp")
    }
    assert found == set()
