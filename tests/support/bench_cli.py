"""Runs ``polyspec bench`` in-process, as the CLI would: the subcommand's own parser and handler."""

from __future__ import annotations

import argparse

from tools.bench import cli as bench_cli


def run_bench_cli(argv: list[str]) -> int:
    """Parses ``bench`` arguments with the subcommand's own parser and runs its handler."""
    parser = argparse.ArgumentParser(prog="polyspec")
    parser.add_argument("--log-level", default="WARNING")
    bench_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--log-level", "WARNING", "bench", *argv])
    code: int = args.handler(args)
    return code
