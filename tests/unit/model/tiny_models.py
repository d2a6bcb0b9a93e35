"""Tiny randomly initialised causal LMs with a small word-level tokenizer, saved as local folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPTBigCodeConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

Architecture = Literal["llama", "gpt_bigcode", "gemma3_text"]
FimStyle = Literal["starcoder", "qwen"] | None

SPECIAL_TOKENS = ("<unk>", "<bos>", "<eos>")
FIM_TOKENS = {
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    "qwen": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
}
WORD_COUNT = 250
PADDING_ROWS = 6  # the LM head is wider than the tokenizer, as in real models
MAX_POSITIONS = 128


def build_tokenizer(fim: FimStyle = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``w0 .. w249`` plus special (and optionally FIM) tokens."""
    specials = [*SPECIAL_TOKENS, *(FIM_TOKENS[fim] if fim else ())]
    words = [f"w{i}" for i in range(WORD_COUNT)]
    vocab = {token: index for index, token in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(specials)
    fast: Any = PreTrainedTokenizerFast  # untyped constructor
    tokenizer: PreTrainedTokenizerFast = fast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    return tokenizer


def _config(arch: Architecture, vocab_size: int, eos: int, bos: int) -> Any:
    common: dict[str, Any] = {"vocab_size": vocab_size, "eos_token_id": eos, "bos_token_id": bos}
    if arch == "llama":
        return LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=MAX_POSITIONS,
            **common,
        )
    if arch == "gpt_bigcode":
        return GPTBigCodeConfig(n_embd=32, n_layer=2, n_head=4, n_positions=MAX_POSITIONS, **common)
    return Gemma3TextConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=MAX_POSITIONS,
        sliding_window=8,
        **common,
    )


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Deterministic weights: normal(0, 0.3) matrices, unit norm scales, zero biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.fill_(1.0)


def build_tiny_model(
    directory: Path, arch: Architecture = "llama", seed: int = 0, fim: FimStyle = None
) -> Path:
    """Saves a tiny random model of ``arch`` and its tokenizer into ``directory``; returns it."""
    tokenizer = build_tokenizer(fim)
    vocab = tokenizer.get_vocab()
    config = _config(arch, len(tokenizer) + PADDING_ROWS, vocab["<eos>"], vocab["<bos>"])
    auto: Any = AutoModelForCausalLM  # untyped factory
    model = auto.from_config(config)
    _randomise(model, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load_reference(directory: Path) -> Any:
    """The saved model, loaded on its own (for uncached reference forwards)."""
    auto: Any = AutoModelForCausalLM  # untyped factory
    model = auto.from_pretrained(str(directory), dtype=torch.float32, local_files_only=True)
    return model.eval()


def reference_logits(model: Any, tokens: list[int], last: int) -> torch.Tensor:  # [last, vocab]
    """Logits of the last ``last`` positions from one full forward without any cache."""
    with torch.inference_mode():
        output = model(input_ids=torch.tensor([tokens], dtype=torch.long), use_cache=False)
    logits: torch.Tensor = output.logits[0, -last:].float()
    return logits
