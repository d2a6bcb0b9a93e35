"""`polyspec --help` and every subcommand's --help work from the installed command."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import run_polyspec

SUBCOMMANDS = [
    ["models"],
    ["serve"],
    ["serve", "model"],
    ["serve", "coordinator"],
    ["generate"],
    ["demo"],
    ["bench"],
]


def test_top_level_help_lists_the_commands() -> None:
    result = run_polyspec(["--help"], timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("models", "serve", "generate", "demo", "bench"):
        assert command in result.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_subcommand_help(command: list[str]) -> None:
    result = run_polyspec([*command, "--help"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: polyspec {' '.join(command)}")


def test_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from tools.main import build_parser\n"
        "build_parser()\n"
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
