"""``polyspec models list`` / ``fetch`` argument handling (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.modelstore.registry import model_names
from tools.main import main


def test_list_prints_one_line_per_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == list(model_names())
    for line in lines:
        _name, folder, sha256 = line.split("\t")
        assert folder == "(not fetched)"
        assert len(sha256) == 64


def test_list_json_is_a_list_of_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json", "--cache-dir", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(model_names())
    for row in rows:
        assert row["folder"] == str(tmp_path / "models" / row["name"])
        assert row["fetched"] is False
        assert row["size_bytes"] == 0
        assert len(row["sha256"]) == 64


def test_list_uses_the_cache_dir_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYSPEC_CACHE_DIR", str(tmp_path))
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["folder"].startswith(str(tmp_path))


def test_fetch_of_an_unknown_name_exits_2_and_lists_known_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "fetch", "smollm2-135m", "llama-70b", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "llama-70b" in err
    for name in model_names():
        assert name in err
    assert not (tmp_path / "models").exists()  # nothing was fetched, not even the known name


def test_fetch_needs_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["models", "fetch"])
    assert caught.value.code == 2
