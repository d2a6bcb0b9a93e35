"""Tiny random models on real tokenizers: they load, generate, reproduce by seed, and keep FIM tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidArgumentError
from tests.support.tiny_models import build_tiny_model

FIM_TOKENS = ("<fim_prefix>", "<fim_middle>", "<fim_suffix>")


def _load(folder: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    return tokenizer, model


def _greedy(folder: Path, prompt: str, new_tokens: int = 8) -> list[int]:
    import torch

    tokenizer, model = _load(folder)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
    assert model.config.vocab_size >= len(tokenizer)
    generated: list[int] = output[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(generated) == new_tokens
    assert all(0 <= token < model.config.vocab_size for token in generated)
    return generated


@pytest.mark.real_model
@pytest.mark.slow
def test_tiny_llama_on_smollm2_vocab_generates(tiny_llama_smollm2_vocab_dir: Path) -> None:
    config = json.loads((tiny_llama_smollm2_vocab_dir / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("llama", 64, 2)
    assert config["vocab_size"] == 49152
    _greedy(tiny_llama_smollm2_vocab_dir, "def fibonacci(n):")


@pytest.mark.real_model
@pytest.mark.slow
def test_tiny_qwen2_on_qwen_vocab_generates(tiny_qwen2_qwen_vocab_dir: Path, qwen05_dir: Path) -> None:
    config = json.loads((tiny_qwen2_qwen_vocab_dir / "config.json").read_text())
    target = json.loads((qwen05_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["vocab_size"] == target["vocab_size"]
    _greedy(tiny_qwen2_qwen_vocab_dir, "def fibonacci(n):")


@pytest.mark.slow
def test_tiny_gpt_bigcode_has_the_starcoder_vocabulary_and_fim_tokens(
    tiny_gpt_bigcode_starcoder_dir: Path,
) -> None:
    tokenizer, model = _load(tiny_gpt_bigcode_starcoder_dir)
    assert model.config.model_type == "gpt_bigcode"
    assert len(tokenizer) == model.config.vocab_size == 49152
    for token in FIM_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        assert isinstance(token_id, int)
        assert token_id != tokenizer.unk_token_id
        encoded = tokenizer(f"{token}x = 1", add_special_tokens=False)["input_ids"]
        assert encoded[0] == token_id, (token, encoded)
    fim_prompt = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n    return c<fim_middle>"
    _greedy(tiny_gpt_bigcode_starcoder_dir, fim_prompt)


def _state(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_tiny_models_are_reproducible_by_seed(modelstore_starcoder_vocab_dir: Path, tmp_path: Path) -> None:
    import torch

    first = build_tiny_model(modelstore_starcoder_vocab_dir, tmp_path / "a", "llama", seed=7, hidden=32)
    again = build_tiny_model(modelstore_starcoder_vocab_dir, tmp_path / "b", "llama", seed=7, hidden=32)
    other = build_tiny_model(modelstore_starcoder_vocab_dir, tmp_path / "c", "llama", seed=8, hidden=32)
    state_first, state_again, state_other = _state(first), _state(again), _state(other)
    assert state_first.keys() == state_again.keys()
    assert all(torch.equal(state_first[key], state_again[key]) for key in state_first)
    assert not torch.equal(state_first["model.embed_tokens.weight"], state_other["model.embed_tokens.weight"])


@pytest.mark.slow
def test_tiny_build_is_idempotent_and_pads_the_vocabulary(
    modelstore_starcoder_vocab_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "padded"
    folder = build_tiny_model(
        modelstore_starcoder_vocab_dir, out, "qwen2", seed=3, hidden=32, vocab_size=49216
    )
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert (
        build_tiny_model(modelstore_starcoder_vocab_dir, out, "qwen2", seed=3, hidden=32, vocab_size=49216)
        == out
    )
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 49216
    _greedy(folder, "x = ")


@pytest.mark.slow
def test_tiny_build_rejects_a_vocabulary_smaller_than_the_tokenizer(
    modelstore_starcoder_vocab_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        build_tiny_model(modelstore_starcoder_vocab_dir, tmp_path / "x", "llama", vocab_size=1000)
    assert caught.value.field == "vocab_size"
    assert not (tmp_path / "x").exists()
