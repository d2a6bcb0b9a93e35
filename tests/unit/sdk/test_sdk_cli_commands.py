"""`polyspec serve coordinator` flags, built from the settings; `polyspec generate` on a scripted server."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import grpc
import pytest
from polyspec import GenerationStats
from polyspec.v1 import coordinator_pb2
from pydantic import BaseModel, Field

from coordinator import cli
from coordinator.config import CoordinatorSettings
from coordinator.request import SchedulerName
from core.serving.server import GrpcServerSettings
from tests.unit.sdk.scripted_coordinator import Reply, ScriptedServer, sample_response, sample_stream
from tools.main import build_parser


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


def _settings_model(spec: cli.SettingsFlag) -> type[BaseModel]:
    return GrpcServerSettings if spec.grpc else CoordinatorSettings


def test_help_shows_the_settings_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "coordinator", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for spec in cli.SETTINGS_FLAGS:
        default = _settings_model(spec).model_fields[spec.field].default
        shown = spec.unset if default is None else getattr(default, "value", default)  # an Enum's value
        assert f"{spec.flag} {spec.metavar} " in text
        assert f"(default: {shown})" in text.split(f"{spec.flag} {spec.metavar} ", 1)[1].split(" --", 1)[0]
    assert "draft tokens per round when a request sets none (default: 5)" in text


def test_unset_flags_keep_the_settings_defaults() -> None:
    settings = cli.settings_from_args(build_parser().parse_args(["serve", "coordinator", "--target", "t:1"]))
    for spec in cli.SETTINGS_FLAGS:
        model = _settings_model(spec)
        value = getattr(settings.grpc if spec.grpc else settings, spec.field)
        assert value == model.model_fields[spec.field].default, spec.flag
    assert settings.grpc.port == cli.DEFAULT_PORT


def test_every_settings_flag_sets_its_field() -> None:
    """Each flag given a non-default value lands in its field, converted to the field's type."""
    given: dict[str, tuple[str, object]] = {
        "--target-dns-interval": ("2.5", 2.5),
        "--drafter-tokenizer-fingerprint": ("A" * 64, "a" * 64),
        "--target-tokenizer-fingerprint": ("b" * 64, "b" * 64),
        "--model-max-message-bytes": ("2097152", 2097152),
        "--host": ("0.0.0.0", "0.0.0.0"),
        "--metrics-host": ("0.0.0.0", "0.0.0.0"),
        "--metrics-port": ("9100", 9100),
        "--shutdown-grace": ("2", 2.0),
        "--scheduler": ("dsi", SchedulerName.DSI),
        "--lookahead-k": ("3", 3),
        "--max-lookahead-k": ("8", 8),
        "--confidence-threshold": ("0.25", 0.25),
        "--auto-confidence-threshold": ("0.5", 0.5),
        "--disco-artifact": ("auto", "auto"),  # a path: test_disco_artifact_flag_takes_a_path_or_auto
        "--disco-artifact-dir": ("models/disco", Path("models/disco")),
        "--max-support": ("32", 32),
        "--max-new-tokens-cap": ("99", 99),
        "--near-tie-logit-margin": ("0.05", 0.05),
        "--max-prompt-bytes": ("4096", 4096),
        "--max-prompt-tokens": ("512", 512),
        "--max-concurrent-requests": ("3", 3),
        "--max-queued-requests": ("0", 0),
        "--call-timeout": ("7.5", 7.5),
        "--call-timeout-factor": ("3", 3.0),
        "--min-call-timeout": ("0.5", 0.5),
        "--eject-after-failures": ("3", 3),
        "--ejection-seconds": ("1.5", 1.5),
        "--call-retry": ("12", 12.0),
        "--startup-timeout": ("30", 30.0),
    }
    assert set(given) == {spec.flag for spec in cli.SETTINGS_FLAGS}
    argv = ["serve", "coordinator", "--target", "t:1", "--drafter", "d:2"]
    argv += [part for flag, (text, _) in given.items() for part in (flag, text)]
    settings = cli.settings_from_args(build_parser().parse_args(argv))
    for spec in cli.SETTINGS_FLAGS:
        value = getattr(settings.grpc if spec.grpc else settings, spec.field)
        expected = given[spec.flag][1]
        assert (value, type(value)) == (expected, type(expected)), spec.flag


def test_a_flag_value_of_the_wrong_type_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "coordinator", "--target", "t:1", "--lookahead-k", "many"])
    assert info.value.code == 2
    assert "argument --lookahead-k: invalid int value: 'many'" in capsys.readouterr().err


def test_field_flag_reads_type_choices_and_help_from_the_field() -> None:
    class Example(BaseModel):
        count: int | None = Field(None, description="How many; 100% sure.")
        mode: Literal["a", "b"] = Field("a", description="TLI mode.")
        pairs: tuple[int, ...] = Field((), description="Not a flag.")
        bare: int = 1

    count = cli.field_flag(Example.model_fields["count"])
    assert count == {"help": "how many; 100%% sure (default: off)", "default": None, "type": int}
    mode = cli.field_flag(Example.model_fields["mode"], "the mode")
    assert mode == {"help": "the mode (default: a)", "default": None, "choices": ("a", "b")}
    assert cli.field_flag(Example.model_fields["mode"])["help"] == "TLI mode (default: a)"
    with pytest.raises(TypeError, match="no command-line type"):
        cli.field_flag(Example.model_fields["pairs"])
    with pytest.raises(TypeError, match="needs a description"):
        cli.field_flag(Example.model_fields["bare"])
    assert GrpcServerSettings.model_fields["shutdown_grace_seconds"].default == 10.0


def test_an_enum_field_takes_its_values_as_choices(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler = cli.field_flag(CoordinatorSettings.model_fields["default_scheduler"])
    assert scheduler["choices"] == ("auto", "si", "dsi")
    assert scheduler["help"].endswith("(default: si)")
    argv = ["serve", "coordinator", "--target", "t:1"]
    assert cli.settings_from_args(build_parser().parse_args(argv)).default_scheduler is SchedulerName.SI
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--scheduler", "fast"])
    assert "argument --scheduler: invalid choice: 'fast'" in capsys.readouterr().err


def test_disco_artifact_flag_takes_a_path_or_auto(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "coordinator", "--target", "t:1", "--drafter", "d:2"]

    def disco(*flags: str) -> tuple[object, object]:
        settings = cli.settings_from_args(build_parser().parse_args([*argv, *flags]))
        return settings.disco_artifact, settings.disco_artifact_dir

    assert disco() == (None, None)  # off by default
    assert disco("--disco-artifact", "models/disco") == (Path("models/disco"), None)
    assert disco("--disco-artifact", "./auto") == (Path("auto"), None)  # a folder named auto
    assert disco("--disco-artifact", "auto") == ("auto", None)
    assert disco("--disco-artifact", "auto", "--disco-artifact-dir", "a") == ("auto", Path("a"))
    assert run_cli([*argv, "--disco-artifact", "models/disco", "--disco-artifact-dir", "a"]) == 2
    assert "disco_artifact_dir is set but disco_artifact is not auto" in capsys.readouterr().err
    assert run_cli([*argv, "--disco-artifact-dir", "a"]) == 2
    assert "disco_artifact_dir is set but disco_artifact is not auto" in capsys.readouterr().err


def test_invalid_serve_flags_exit_2_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["serve", "coordinator", "--target", "no-port-here"]) == 2
    assert "target_addresses" in capsys.readouterr().err


def test_generate_json_prints_one_object_with_every_stat(
    scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.script(Reply(response=sample_response()))
    code = run_cli(
        ["generate", "--coordinator", scripted.address, "--json", "--temperature", "0", "--lookahead", "4",
         "--algorithm", "sd", "--seed", "3", "--scheduler", "dsi", "def f():"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == "hello world" and out["token_ids"] == [5, 6, 7] and out["finish_reason"] == "stop"
    assert set(out["stats"]) == {f.name for f in dataclasses.fields(GenerationStats)}
    assert out["stats"]["algorithm"] == "tli"
    request = scripted.seen[0].request
    assert request.prompt == "def f():" and request.lookahead.k == 4 and request.seed == 3
    assert request.scheduler == coordinator_pb2.SCHEDULER_DSI and out["stats"]["scheduler"] == "dsi"


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
    settings = cli.settings_from_args(args)
    assert settings.target_discovery == "kubernetes:///polyspec-target.ml:grpc"
    assert settings.target_addresses == ()
    assert settings.dns_interval_seconds == 2.0
