"""Bench options: what a run measures, validated before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from tools.bench import cli as bench_cli
from tools.bench.lookaheads import BenchLookahead, parse_bench_lookahead
from tools.bench.options import BenchOptions


def test_reference_only_runs_are_allowed_and_empty_runs_refused() -> None:
    options = BenchOptions(drafter="d", target="t", services=False)
    assert (options.services, options.reference) == (False, True)
    with pytest.raises(ValidationError, match="nothing to run"):
        BenchOptions(drafter="d", target="t", services=False, reference=False)


def test_algorithms_start_with_the_baseline() -> None:
    options = BenchOptions(drafter="d", target="t", algorithms=("slem", "ar", "tli", "slem"))
    assert options.algorithms == ("ar", "slem", "tli")


def test_the_drafter_precision_defaults_to_int8_and_is_checked() -> None:
    options = BenchOptions(drafter="d", target="t")
    assert (options.drafter_dtype, options.drafter_quantize) == ("bfloat16", "int8-weight-only")
    with pytest.raises(ValidationError, match="int8-dynamic computes in float32"):
        BenchOptions(drafter="d", target="t", drafter_quantize="int8-dynamic")
    bf16 = BenchOptions(
        drafter="d", target="t", drafter_dtype="bfloat16", drafter_quantize="int8-weight-only"
    )
    assert bf16.drafter_quantize == "int8-weight-only"


def test_disco_lookaheads_parse_with_the_request_they_carry() -> None:
    assert parse_bench_lookahead("disco") == BenchLookahead("disco", "disco", classifier=True)
    assert parse_bench_lookahead("disco:4") == BenchLookahead("disco:4", "disco:4", classifier=True)
    assert parse_bench_lookahead("auto+disco") == BenchLookahead("auto+disco", "auto", classifier=True)
    assert parse_bench_lookahead("auto") == BenchLookahead("auto", "auto", classifier=False)
    assert parse_bench_lookahead("static:3") == BenchLookahead("static:3", "static:3", classifier=False)
    with pytest.raises(ValueError, match=r"\+disco applies to auto"):
        parse_bench_lookahead("static:3+disco")
    with pytest.raises(ValueError, match="lookahead"):
        parse_bench_lookahead("disco:x")


def test_disco_lookaheads_need_the_artifact(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="--disco-artifact PATH"):
        BenchOptions(drafter="d", target="t", lookaheads=("auto", "auto+disco"))
    with pytest.raises(ValidationError, match="is not a folder"):
        BenchOptions(drafter="d", target="t", lookaheads=("disco",), disco_artifact=tmp_path / "absent")
    options = BenchOptions(
        drafter="d", target="t", lookaheads=("disco:6", "auto+disco"), disco_artifact=tmp_path
    )
    assert options.lookaheads == ("disco:6", "auto+disco") and options.static_lookahead is None
    assert BenchOptions(drafter="d", target="t", lookaheads=("static:5",)).static_lookahead == 5


def test_the_cli_refuses_disco_lookaheads_without_the_artifact_while_parsing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="polyspec")
    bench_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "--drafter", "d", "--target", "t", "--lookahead", "auto,disco:4"])
    with pytest.raises(SystemExit) as exit_info:
        args.handler(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--lookahead disco:4 runs the pair's trained stop classifier" in error
    assert "--disco-artifact PATH" in error


def test_a_repeated_list_option_adds_up_instead_of_keeping_the_last() -> None:
    parser = argparse.ArgumentParser(prog="polyspec")
    bench_cli.register(parser.add_subparsers(dest="command", required=True))
    base = ["bench", "--drafter", "d", "--target", "t"]
    args = parser.parse_args([*base, "--lookahead", "static:8", "--lookahead", "disco,auto+disco"])
    assert args.lookahead == ("static:8", "disco", "auto+disco")
    args = parser.parse_args([*base, "--temperatures", "0", "--temperatures", "0.7"])
    assert args.temperatures == (0.0, 0.7)
    assert parser.parse_args(base).lookahead == ("auto",)  # the default when not given
    assert parser.parse_args([*base, "--lookahead", "disco"]).lookahead == ("disco",)
