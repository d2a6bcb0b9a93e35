"""Vocabulary store pieces that need no network: names, and extraction from a source archive."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from core.errors import InvalidArgumentError
from services.modelstore.errors import ModelStoreError
from services.modelstore.vocabs import (
    VOCAB_FILES,
    VOCAB_LENGTHS,
    _extract_vocab_files,
    fetch_vocab,
    vocab_names,
)

MODELS_DIR = "llama_cpp_python-0.3.36/vendor/llama.cpp/models"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_the_documented_vocabularies_are_known() -> None:
    assert set(vocab_names()) == {
        "gpt2",
        "llama-spm",
        "llama-bpe",
        "qwen2",
        "starcoder",
        "phi-3",
        "deepseek-coder",
    }
    assert set(VOCAB_LENGTHS) == set(VOCAB_FILES)


def test_unknown_vocabulary_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        fetch_vocab("klingon", tmp_path)
    assert caught.value.field == "vocab"
    assert "starcoder" in caught.value.message
    assert not any(tmp_path.iterdir())


def test_extraction_takes_only_the_wanted_files_from_the_models_folder(tmp_path: Path) -> None:
    archive = tmp_path / "source.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for file_name in VOCAB_FILES.values():
            _add(tar, f"{MODELS_DIR}/{file_name}", file_name.encode())
        _add(tar, f"{MODELS_DIR}/ggml-vocab-falcon.gguf", b"not wanted")
        _add(tar, "llama_cpp_python-0.3.36/elsewhere/ggml-vocab-gpt-2.gguf", b"decoy")
    dest = tmp_path / "out"
    dest.mkdir()
    _extract_vocab_files(archive, dest)
    assert sorted(path.name for path in dest.iterdir()) == sorted(VOCAB_FILES.values())
    assert (dest / "ggml-vocab-gpt-2.gguf").read_bytes() == b"ggml-vocab-gpt-2.gguf"


def test_extraction_reports_missing_files(tmp_path: Path) -> None:
    archive = tmp_path / "source.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, f"{MODELS_DIR}/ggml-vocab-gpt-2.gguf", b"x")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ModelStoreError, match=r"ggml-vocab-starcoder\.gguf"):
        _extract_vocab_files(archive, dest)
