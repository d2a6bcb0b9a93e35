"""Real tokenizer vocabularies from the llama-cpp-python source archive, converted and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.modelstore.vocabs import SOURCE_SHA256, VOCAB_LENGTHS, fetch_vocab, vocab_names

pytestmark = pytest.mark.slow

TEXT = "def fibonacci(n):\n    return n"


@pytest.mark.parametrize("name", vocab_names())
def test_vocabulary_loads_with_its_documented_size(name: str, model_cache_dir: Path) -> None:
    from transformers import AutoTokenizer

    folder = fetch_vocab(name, model_cache_dir, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert len(tokenizer) == VOCAB_LENGTHS[name]
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert "fibonacci(n):" in tokenizer.decode(ids, skip_special_tokens=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source_sha256"] == SOURCE_SHA256
    assert manifest["tokenizer_len"] == VOCAB_LENGTHS[name]


def test_second_fetch_reuses_the_folder(model_cache_dir: Path) -> None:
    folder = fetch_vocab("gpt2", model_cache_dir, progress=False)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert fetch_vocab("gpt2", model_cache_dir, progress=False) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
