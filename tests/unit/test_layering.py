"""The floor plan as a test: every import points down (docs/architecture.md, "Layering").

Floors, from the ground up:
1. ``core`` — errors, sampling math, TLI's logit restriction, the prefix checksum, model-call domain types,
   model-free lookup (``core.lookup``, plain Python: not even torch); pure (no gRPC, asyncio or protobuf)
   except ``core.serving``, the gRPC furniture both servers run on.
2. ``services`` (the model service, the lookup drafter, the model store) and the coordinator's pure math
   (``coordinator.verify``, ``coordinator.vocab``, ``coordinator.dsimodel``); neither imports the other.
3. the rest of ``coordinator``; its loop and lookahead work on domain types (no protobuf).
4. ``tools`` — the ``polyspec`` command, demo, bench: may import anything.
The SDK (``sdk/polyspec``) stands apart: grpcio and protobuf only.

Every import counts, including the lazy ones inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROTOBUF = ("google.protobuf", "polyspec.v1", "grpc")
ASYNC_RPC = ("grpc", "asyncio", "google.protobuf", "polyspec")
PROJECT = ("core", "services", "coordinator", "tools")


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT / "sdk" if path.is_relative_to(ROOT / "sdk") else ROOT)
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str | None = None) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = module or _module_name(path)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # ``from core import errors`` names the module core.errors
                yield node.lineno, f"{name}.{alias.name}"


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _files(*folders: str) -> list[Path]:
    found: list[Path] = []
    for folder in folders:
        found.extend(p for p in sorted((ROOT / folder).rglob("*.py")) if "_pb2" not in p.name)
    return found


def _violations(files: list[Path], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in files:
        for line, name in _imports(path):
            if _under(name, forbidden) and not _under(name, allowed):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return sorted(set(found))


def _pure_core() -> list[Path]:
    return [p for p in _files("core") if "serving" not in p.relative_to(ROOT / "core").parts]


RULES: dict[str, tuple[list[Path], tuple[str, ...], tuple[str, ...]]] = {
    "core imports nothing above it": (_files("core"), ("services", "coordinator", "tools", "polyspec"), ()),
    "core's pure modules import no gRPC, asyncio or protobuf": (_pure_core(), ASYNC_RPC, ()),
    "core.lookup is plain Python (no torch, numpy, gRPC, asyncio or protobuf)": (
        _files("core/lookup"),
        (*ASYNC_RPC, "torch", "numpy"),
        (),
    ),
    "the model service never imports the coordinator or the tools": (
        _files("services"),
        ("coordinator", "tools"),
        (),
    ),
    "the coordinator never imports the model service or the tools": (
        _files("coordinator"),
        ("services", "tools"),
        (),
    ),
    "coordinator.verify and coordinator.vocab are pure and import no other coordinator code": (
        _files("coordinator/verify", "coordinator/vocab"),
        (*ASYNC_RPC, "services", "tools", "coordinator"),
        ("coordinator.verify", "coordinator.vocab"),
    ),
    "coordinator.dsimodel is stdlib-only math and imports no other coordinator code": (
        _files("coordinator/dsimodel"),
        (*ASYNC_RPC, "torch", "numpy", "services", "tools", "coordinator"),
        ("coordinator.dsimodel",),
    ),
    "the SDK imports no torch and no server code": (
        _files("sdk/polyspec"),
        ("torch", "transformers", "numpy", *PROJECT),
        (),
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_imports_point_down(rule: str) -> None:
    files, forbidden, allowed = RULES[rule]
    assert files, f"{rule}: no files found"
    assert _violations(files, forbidden, allowed) == []


def test_loop_and_lookahead_import_no_protobuf() -> None:
    """Protobuf is converted at the servicer and at the model-service client, nowhere else."""
    files = _files("coordinator/loop", "coordinator/lookahead")
    assert files
    assert _violations(files, PROTOBUF) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """A guard on the guard: imports inside functions and relative imports are resolved."""
    assert _under("core.errors", ("core",)) and not _under("corex", ("core",))
    source = tmp_path / "probe.py"
    source.write_text(
        "from . import sibling\nfrom ..loop import round\n\n\ndef later() -> None:\n    import grpc\n"
    )
    names = {name for _, name in _imports(source, module="coordinator.vocab.probe")}
    assert {"coordinator.vocab.sibling", "coordinator.loop.round", "grpc"} <= names
