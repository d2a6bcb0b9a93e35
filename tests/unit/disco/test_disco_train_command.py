"""``polyspec disco train`` records the draft length k its collections were made with (``training.k``, the
artifact's ``trained_k``) and refuses collection files of different k; a collection file without k (made
before the header said) trains an artifact without one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.disco.artifact import SPEC_FILE, load_artifact
from core.sampling import SamplingConfig
from tests.support.toy_lm import random_lm
from tests.support.toy_service import ToyModel, bare_info
from tools.disco.collect import CollectSettings, collect, save_collection
from tools.main import build_parser

VOCAB = 6
PAIR = {
    "drafter_fingerprint": "toy-drafter",
    "target_fingerprint": "toy-target",
    "drafter_model": "drafter",
    "target_model": "target",
}


def collection_file(path: Path, k: int | None, prompts: range) -> Path:
    """Greedy rounds of a toy pair at draft length ``k`` (3 if None), its header as ``disco collect``
    writes it; ``k=None`` leaves ``settings.k`` out."""
    settings = CollectSettings(k=k or 3, max_new_tokens=12, sampling=SamplingConfig(0.0))
    drafter, target = (ToyModel(random_lm(seed, VOCAB), bare_info(VOCAB)) for seed in (2, 1))
    rounds = collect(drafter, target, [(i, [i % VOCAB]) for i in prompts], settings)
    header_settings: dict[str, Any] = {"max_new_tokens": 12, "temperature": 0.0, "seed": 0}
    if k is not None:
        header_settings["k"] = k
    save_collection(path, rounds, {"pair": PAIR, "regime": "greedy", "settings": header_settings})
    return path


def train(files: list[Path], out: Path) -> int:
    """``polyspec disco train`` in-process (without the process-wide logging setup of ``main``)."""
    data = [arg for path in files for arg in ("--data", str(path))]
    argv = ["disco", "train", *data, "--out", str(out), "--epochs", "20"]
    args = build_parser().parse_args([*argv, "--train-prompts", "0-3", "--validation-prompts", "4-5"])
    code: int = args.handler(args)
    return code


def test_train_records_the_collections_draft_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [
        collection_file(tmp_path / "a.json", 4, range(0, 3)),
        collection_file(tmp_path / "b.json", 4, range(3, 6)),
    ]
    assert train(files, tmp_path / "artifact") == 0
    artifact = load_artifact(tmp_path / "artifact")
    assert artifact.trained_k == 4
    spec = json.loads((tmp_path / "artifact" / SPEC_FILE).read_text(encoding="utf-8"))
    assert spec["training"]["k"] == 4
    assert json.loads(capsys.readouterr().out)["trained_k"] == 4


def test_train_refuses_collections_of_different_draft_lengths(tmp_path: Path) -> None:
    first = collection_file(tmp_path / "k4.json", 4, range(0, 3))
    second = collection_file(tmp_path / "k8.json", 8, range(3, 6))
    with pytest.raises(SystemExit, match="different draft lengths") as info:
        train([first, second], tmp_path / "artifact")
    assert f"{first}: k=4" in str(info.value) and f"{second}: k=8" in str(info.value)
    assert not (tmp_path / "artifact").exists()
    unknown = collection_file(tmp_path / "old.json", None, range(3, 6))
    with pytest.raises(SystemExit, match=f"{unknown}: k=\\?"):
        train([first, unknown], tmp_path / "artifact")
    zero = collection_file(tmp_path / "zero.json", 0, range(3, 6))
    with pytest.raises(SystemExit, match=f"{zero}: settings.k .* must be a positive integer, got 0"):
        train([first, zero], tmp_path / "artifact")
    assert not (tmp_path / "artifact").exists()


def test_collections_without_a_draft_length_train_an_artifact_without_one(tmp_path: Path) -> None:
    files = [collection_file(tmp_path / "old.json", None, range(0, 6))]
    assert train(files, tmp_path / "artifact") == 0
    spec = json.loads((tmp_path / "artifact" / SPEC_FILE).read_text(encoding="utf-8"))
    assert "k" not in spec["training"] and load_artifact(tmp_path / "artifact").trained_k is None
