"""The tiny-model builder on the word-level tokenizer: reproducible, idempotent, keyed by its recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.errors import InvalidArgumentError
from tests.support.tiny_models import PADDING_ROWS, build_tiny_model, build_word_model, build_word_tokenizer


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_the_same_recipe_gives_the_same_weights_and_another_seed_others(tmp_path: Path) -> None:
    first, again = (
        _weights(build_word_model(tmp_path / "a", seed=7)),
        _weights(build_word_model(tmp_path / "b", seed=7)),
    )
    other = _weights(build_word_model(tmp_path / "c", seed=8))
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_a_build_is_reused_while_its_recipe_holds_and_redone_for_another_tokenizer(tmp_path: Path) -> None:
    folder = build_word_model(tmp_path / "m", fim="starcoder")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_word_model(tmp_path / "m", fim="starcoder") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    build_word_model(tmp_path / "m", fim="qwen")  # as many tokens, other ones
    assert "<|fim_prefix|>" in json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]


def test_word_models_have_a_head_wider_than_their_tokenizer(tmp_path: Path) -> None:
    for arch in ("llama", "gpt_bigcode", "gemma3_text"):
        folder = build_word_model(tmp_path / arch, arch)
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == arch
        assert config["vocab_size"] == len(build_word_tokenizer()) + PADDING_ROWS


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        build_tiny_model(build_word_tokenizer(), tmp_path / "x", vocab_size=10)
    assert caught.value.field == "vocab_size"
    assert not (tmp_path / "x").exists()
