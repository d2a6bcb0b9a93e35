"""The lookahead package stays pure: its policies work on domain types the loop hands them."""

from __future__ import annotations

import ast
from pathlib import Path

import coordinator.lookahead

PACKAGE = Path(coordinator.lookahead.__file__).parent
FORBIDDEN = ("google.protobuf", "polyspec", "grpc", "asyncio", "services", "tools")


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_package_imports_no_protobuf_grpc_asyncio_or_services() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) > 1
    found = {
        f"{path.name} imports {name}"
        for path in modules
        for name in _imported(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert found == set()


def test_the_package_imports_only_itself_from_the_coordinator() -> None:
    found = {
        f"{path.name} imports {name}"
        for path in sorted(PACKAGE.glob("*.py"))
        for name in _imported(path)
        if name.startswith("coordinator.") and not name.startswith("coordinator.lookahead")
    }
    assert found == set()
