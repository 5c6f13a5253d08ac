"""The package's layers point one way: a module imports only from its own layer or below.

``backchannel.rp``, the relying parties' client, stands apart: it imports no
server module and no server module imports it.

endpoints and the CLI call the protocol (authenticator, then oauth), which calls
policy, audit and delivery, which call db/; settings, errors and the other
foundations sit at the bottom. Imports under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "backchannel"

# Higher numbers may import lower ones; equal numbers only within one package.
LAYERS: dict[str, int] = {
    "rp": 9,  # the relying parties' client: imports nothing of the server, nor it of rp
    "__main__": 7,
    "cli": 6,
    "app": 5,
    "endpoints": 4,
    "authenticator": 3,
    "oauth": 2,
    "policy": 1,
    "audit": 1,
    "delivery": 1,
    "housekeeping": 1,
    "db": 0,
    "settings": -1,
    "errors": -1,
    "key_wrapping": -1,
    "url_guard": -1,
    "bundled": -1,
    "untrusted_json": -1,
    "periodic": -1,
    "observability": -1,
    "responses": -1,
}
FOUNDATION_ORDER = [
    "observability",
    "responses",
    "errors",
    "untrusted_json",
    "url_guard",
    "periodic",
    "key_wrapping",
    "settings",
]


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("backchannel.")}


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        part = relative.parts[0].removesuffix(".py")
        if part in ("__init__", "resources"):  # the package marker; bundled files, not code
            continue
        if part not in LAYERS:
            problems.append(f"{relative}: not placed in a layer")
            continue
        for imported in _imports(path):
            target = _part(imported)
            if (part == "rp") != (target == "rp"):
                problems.append(f"{relative} imports {imported}: rp/ and the server are apart")
            elif target not in LAYERS:
                problems.append(f"{relative} imports {imported}: not placed in a layer")
            elif target == part:
                continue
            elif LAYERS[target] > LAYERS[part] or (
                LAYERS[target] == LAYERS[part] and not _foundation_below(target, part)
            ):
                problems.append(f"{relative} imports {imported}: up or sideways")
    return problems


def _foundation_below(target: str, part: str) -> bool:
    if target in FOUNDATION_ORDER and part in FOUNDATION_ORDER:
        return FOUNDATION_ORDER.index(target) < FOUNDATION_ORDER.index(part)
    return False


def test_no_module_imports_from_a_higher_layer_or_a_sibling_package() -> None:
    assert _violations() == []
