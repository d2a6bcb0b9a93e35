"""Model service settings and the ``polyspec serve model`` arguments."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from services.model import cli
from services.model.settings import MiB, ModelServiceSettings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="polyspec serve")
    cli.register_serve(parser.add_subparsers(dest="role", required=True))
    return parser.parse_args(argv)


def test_defaults_and_the_name_from_the_folder(tmp_path: Path) -> None:
    settings = ModelServiceSettings(model_dir=tmp_path / "my-model")
    assert settings.model_name == "my-model"
    assert (settings.device, settings.dtype) == ("cpu", "float32")
    assert (settings.max_draft_tokens, settings.default_max_support) == (16, 64)
    assert settings.emulated_forward_seconds == 0
    assert settings.metrics_port is None
    assert settings.max_token_masks == 16
    assert ModelServiceSettings(model_dir=tmp_path, model_name="x").model_name == "x"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device", "gpu"),
        ("device", "cuda:x"),
        ("dtype", "int8"),
        ("cache_budget_bytes", 0),
        ("cache_ttl_seconds", 0),
        ("max_draft_tokens", 0),
        ("max_queue", 0),
        ("max_token_masks", 0),
        ("emulated_forward_seconds", -1),
        ("torch_threads", 0),
        ("linear_kernel", "mkl"),
        ("quantize", "int4"),
        ("metrics_port", 70000),
        ("unknown_field", 1),
    ],
)
def test_invalid_settings_are_rejected(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        ModelServiceSettings.model_validate({"model_dir": tmp_path, field: value})


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = ModelServiceSettings(model_dir=tmp_path, device="cuda:1")
    with pytest.raises(ValidationError):
        settings.device = "cpu"  # type: ignore[misc]


def test_arguments_map_onto_settings(tmp_path: Path) -> None:
    args = parse(
        [
            "model",
            "--model",
            str(tmp_path),
            "--name",
            "drafter",
            "--port",
            "0",
            "--metrics-port",
            "9100",
            "--cache-budget-mib",
            "2",
            "--max-draft-tokens",
            "8",
            "--max-support",
            "16",
            "--threads",
            "2",
            "--emulate-forward-ms",
            "250",
            "--max-token-masks",
            "3",
            "--linear-kernel",
            "onednn-packed",
        ]
    )
    settings = ModelServiceSettings.model_validate(cli._settings_fields(args))
    assert settings.model_name == "drafter"
    assert settings.grpc.port == 0 and settings.grpc.host == "127.0.0.1"
    assert settings.metrics_port == 9100
    assert settings.cache_budget_bytes == 2 * MiB
    assert (settings.max_draft_tokens, settings.default_max_support, settings.torch_threads) == (8, 16, 2)
    assert settings.emulated_forward_seconds == pytest.approx(0.25)
    assert settings.max_token_masks == 3
    assert settings.linear_kernel == "onednn-packed"
    assert ModelServiceSettings(model_dir=tmp_path).linear_kernel == "onednn"
    assert args.handler is cli._serve_model
    assert parse(["model", "--model", str(tmp_path)]).port == 50052


def test_invalid_arguments_exit_with_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._serve_model(parse(["model", "--model", str(tmp_path), "--max-queue", "0"])) == 2
    assert "max_queue" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert cli._serve_model(parse(["model", "--model", str(missing)])) == 2
    assert "not a folder" in capsys.readouterr().err


def test_help_names_the_benchmarking_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["model", "--help"])
    assert "BENCHMARKING FLAG" in capsys.readouterr().out


def test_the_cli_module_imports_no_torch() -> None:
    code = "import sys, services.model.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _help_of(flag: str, text: str) -> str:
    """The help text of ``flag`` in a --help output whose lines were joined."""
    return text.split(f" {flag} ", 1)[1].split(" --", 1)[0]


def test_help_shows_the_settings_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["model", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    fields = ModelServiceSettings.model_fields
    shown = {
        "--device": fields["device"].default,
        "--dtype": fields["dtype"].default,
        "--quantize": fields["quantize"].default,
        "--cache-budget-mib": f"{fields['cache_budget_bytes'].default / MiB:g}",
        "--cache-ttl-seconds": fields["cache_ttl_seconds"].default,
        "--max-draft-tokens": fields["max_draft_tokens"].default,
        "--max-support": fields["default_max_support"].default,
        "--max-queue": fields["max_queue"].default,
        "--max-token-masks": fields["max_token_masks"].default,
        "--linear-kernel": fields["linear_kernel"].default,
        "--emulate-forward-ms": f"{fields['emulated_forward_seconds'].default * 1000:g}",
        "--metrics-port": "off",
        "--threads": "torch",
    }
    for flag, default in shown.items():
        assert f"(default: {default})" in _help_of(flag, text), flag
    assert "(default: cpu)" in _help_of("--device", text)


def test_choices_come_from_the_settings_types(tmp_path: Path) -> None:
    from services.model.settings import DType, LinearKernel, Quantize

    choices = (
        ("--dtype", "dtype", DType),
        ("--linear-kernel", "linear_kernel", LinearKernel),
        ("--quantize", "quantize", Quantize),
    )
    for flag, field, kind in choices:
        for choice in get_args(kind):
            args = parse(["model", "--model", str(tmp_path), flag, choice])
            settings = ModelServiceSettings.model_validate(cli._settings_fields(args))
            assert getattr(settings, field) == choice
    with pytest.raises(SystemExit):
        parse(["model", "--model", str(tmp_path), "--dtype", "int8"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"quantize": "int8-dynamic", "dtype": "bfloat16"}, "int8-dynamic computes in float32"),
        ({"quantize": "int8-weight-only", "dtype": "float16"}, "bfloat16 or float32"),
        ({"quantize": "int8-weight-only", "device": "cuda"}, "runs on the cpu only"),
    ],
)
def test_quantize_is_checked_against_dtype_and_device(
    tmp_path: Path, fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelServiceSettings.model_validate({"model_dir": tmp_path, **fields})
    args = parse(["model", "--model", str(tmp_path), "--quantize", "int8-weight-only", "--dtype", "bfloat16"])
    settings = ModelServiceSettings.model_validate(cli._settings_fields(args))
    assert (settings.quantize, settings.dtype) == ("int8-weight-only", "bfloat16")
    assert ModelServiceSettings(model_dir=tmp_path).quantize == "none"
