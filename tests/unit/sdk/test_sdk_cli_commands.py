"""`polyspec serve coordinator` flag mapping and `polyspec generate` against a scripted coordinator."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import grpc
import pytest
from polyspec import GenerationStats

from coordinator import cli
from coordinator.config import CoordinatorSettings
from core.serving.server import GrpcServerSettings
from services.cli import build_parser
from tests.unit.sdk.scripted_coordinator import Reply, ScriptedServer, sample_response, sample_stream


def run_cli(argv: list[str]) -> int:
    """Parses and runs one command in-process (without the process-wide logging setup of ``main``)."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


def test_serve_coordinator_flags_map_to_settings() -> None:
    args = build_parser().parse_args(
        [
            "serve", "coordinator", "--drafter", "d:4", "--target", "a:1, b:2", "--target", "c:3",
            "--port", "0", "--host", "0.0.0.0", "--lookahead-k", "7", "--max-new-tokens-cap", "99",
            "--confidence-threshold", "0.25", "--shutdown-grace", "2", "--metrics-port", "0",
        ]
    )  # fmt: skip
    settings = cli.settings_from_args(args)
    assert settings.drafter_address == "d:4"
    assert settings.target_addresses == ("a:1", "b:2", "c:3")
    assert (settings.grpc.host, settings.grpc.port, settings.grpc.shutdown_grace_seconds) == (
        "0.0.0.0",
        0,
        2.0,
    )
    assert settings.default_lookahead_k == 7 and settings.max_new_tokens_cap == 99
    assert settings.default_confidence_threshold == 0.25 and settings.metrics_port == 0
    assert settings.max_lookahead_k == CoordinatorSettings.model_fields["max_lookahead_k"].default


def test_help_defaults_match_the_settings() -> None:
    fields = CoordinatorSettings.model_fields
    for flag, (field, shown) in cli.SETTINGS_FLAGS.items():
        assert field in fields, flag
        assert fields[field].default == shown, flag
    assert GrpcServerSettings.model_fields["shutdown_grace_seconds"].default == 10.0


def test_invalid_serve_flags_exit_2_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", "coordinator", "--target", "no-port-here"]) == 2
    assert "target_addresses" in capsys.readouterr().err


def test_generate_json_prints_one_object_with_every_stat(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.script(Reply(response=sample_response()))
    code = run_cli(
        ["generate", "--coordinator", scripted.address, "--json", "--temperature", "0", "--lookahead", "4",
         "--algorithm", "sd", "--seed", "3", "def f():"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == "hello world" and out["token_ids"] == [5, 6, 7] and out["finish_reason"] == "stop"
    assert set(out["stats"]) == {f.name for f in dataclasses.fields(GenerationStats)}
    assert out["stats"]["algorithm"] == "tli"
    request = scripted.seen[0].request
    assert request.prompt == "def f():" and request.lookahead.k == 4 and request.seed == 3


def test_generate_stream_prints_deltas_and_stats(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.script(Reply(stream=sample_stream()))
    assert run_cli(["generate", "--coordinator", scripted.address, "--stream", "p"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "def f(x)\n"
    assert "algorithm=sd" in captured.err and "finish=length" in captured.err


def test_generate_chat_and_fim_inputs(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chat_file = tmp_path / "chat.json"
    chat_file.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    scripted.script(Reply(response=sample_response()), Reply(response=sample_response()))
    assert run_cli(["generate", "--coordinator", scripted.address, "--chat-json", f"@{chat_file}"]) == 0
    assert (
        run_cli(["generate", "--coordinator", scripted.address, "--fim-prefix", "a(", "--fim-suffix", ")"])
        == 0
    )
    chat_request, fim_request = (seen.request for seen in scripted.seen)
    assert [(m.role, m.content) for m in chat_request.chat.messages] == [("user", "hi")]
    assert (fim_request.fim.prefix, fim_request.fim.suffix) == ("a(", ")")
    assert capsys.readouterr().out == "hello world\nhello world\n"


def test_generate_server_error_prints_code_and_message(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.script(
        Reply(code=grpc.StatusCode.INVALID_ARGUMENT, message="max_new_tokens: must be >= 1, got 0")
    )
    assert run_cli(["generate", "--coordinator", scripted.address, "--max-new-tokens", "0", "x"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: INVALID_ARGUMENT: max_new_tokens: must be >= 1, got 0\n"
    assert captured.out == ""


def test_generate_without_input_is_an_invalid_argument(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["generate", "--coordinator", scripted.address]) == 1
    assert capsys.readouterr().err.startswith("error: INVALID_ARGUMENT: prompt: give exactly one of")
    assert scripted.seen == []


def test_generate_rejects_a_bad_lookahead_at_parse_time(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["generate", "--lookahead", "sometimes", "x"])
    assert info.value.code == 2
    assert "lookahead: expected K, POLICY" in capsys.readouterr().err


def test_generate_unreachable_coordinator_is_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    server = ScriptedServer()
    address = server.address
    server.stop()
    assert run_cli(["generate", "--coordinator", address, "--max-retries", "0", "x"]) == 1
    assert capsys.readouterr().err.startswith("error: UNAVAILABLE: ")


def test_serve_coordinator_target_discovery_flag() -> None:
    from coordinator.cli import settings_from_args
    from services.cli import build_parser

    args = build_parser().parse_args(
        [
            "serve",
            "coordinator",
            "--target",
            "kubernetes:///polyspec-target.ml:grpc",
            "--target-dns-interval",
            "2",
        ]
    )
    settings = settings_from_args(args)
    assert settings.target_discovery == "kubernetes:///polyspec-target.ml:grpc"
    assert settings.target_addresses == ()
    assert settings.dns_interval_seconds == 2.0
