"""The ``polyspec`` command: the subcommands of every area, assembled.

Each area adds its subcommands through a ``register`` function in a light ``cli`` module of its own (no
torch at import time, so ``polyspec --help`` stays fast); handlers import heavy modules lazily. A handler
takes the parsed arguments and returns the process exit code. ``python -m tools`` runs the same command.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Sequence

from coordinator import cli as coordinator_cli
from services.lookup import cli as lookup_cli
from services.model import cli as model_cli
from services.modelstore import cli as modelstore_cli
from tools import client_commands
from tools.bench import cli as bench_cli
from tools.disco import cli as disco_cli
from tools.simulate import cli as simulate_cli

# What a shell reports for a command killed by SIGPIPE (``yes | head -1``).
EXIT_STDOUT_CLOSED = 128 + signal.SIGPIPE


def build_parser(serve_roles: bool = True) -> argparse.ArgumentParser:
    """The whole command; without ``serve_roles`` the ``serve`` roles are left out (see ``main``)."""
    parser = argparse.ArgumentParser(
        prog="polyspec",
        description="Lossless speculative decoding as gRPC services, with drafters of any tokenizer.",
    )
    parser.add_argument("--log-level", default="INFO", help="log level of the JSON logs on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modelstore_cli.register(commands)
    serve = commands.add_parser("serve", help="run a service (model, drafter or coordinator)")
    if serve_roles:
        roles = serve.add_subparsers(dest="role", required=True, metavar="ROLE")
        model_cli.register_serve(roles)
        lookup_cli.register_serve(roles)
        coordinator_cli.register_serve(roles)
    client_commands.register(commands)
    bench_cli.register(commands)
    simulate_cli.register(commands)
    disco_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    # The serve flags are built from the settings models (pydantic, grpc: a few tenths of a second);
    # a command line without "serve" never reaches them, so `polyspec --help` and the others skip them.
    args = build_parser(serve_roles="serve" in arguments).parse_args(arguments)
    from core.serving.logging import configure_logging

    configure_logging(args.log_level)
    handler = args.handler
    try:
        code: int = handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        return _quiet_after_closed_stdout()
    return code


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (``polyspec models list | head -1``)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (OSError, ValueError, AttributeError):
        return False
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _quiet_after_closed_stdout() -> int:
    """Points stdout at /dev/null (Python flushes it again at exit) and returns the SIGPIPE exit status."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_STDOUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
