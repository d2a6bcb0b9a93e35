"""The ``polyspec`` command.

Each area adds its own subcommands through a ``register`` function in a light ``cli`` module of its
own (no torch at import time, so ``polyspec --help`` stays fast); handlers import heavy modules lazily.
A handler takes the parsed arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from coordinator import cli as coordinator_cli
from coordinator.bench import cli as bench_cli
from services.model import cli as model_cli
from services.modelstore import cli as modelstore_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyspec",
        description="Lossless speculative decoding as gRPC services, with drafters of any tokenizer.",
    )
    parser.add_argument("--log-level", default="INFO", help="log level of the JSON logs on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modelstore_cli.register(commands)
    serve = commands.add_parser("serve", help="run a service (model or coordinator)")
    roles = serve.add_subparsers(dest="role", required=True, metavar="ROLE")
    model_cli.register_serve(roles)
    coordinator_cli.register_serve(roles)
    coordinator_cli.register(commands)
    bench_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.serving.logging import configure_logging

    configure_logging(args.log_level)
    handler = args.handler
    code: int = handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
