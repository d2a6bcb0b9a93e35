"""What the Info RPC reports about a loaded model: limits, stop tokens and the tokenizer's identity."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.modelcalls import FimTokens

# Fill-in-the-middle token spellings: StarCoder style, then Qwen2.5-Coder style.
FIM_SPELLINGS: tuple[FimTokens, ...] = (
    FimTokens("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    FimTokens("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
)

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 (hex) of the fast tokenizer's serialization in canonical JSON."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; a fast tokenizer is required")
    canonical = json.dumps(json.loads(backend.to_str()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def tokenizer_files(tokenizer: Any) -> dict[str, bytes]:
    """Every file ``save_pretrained`` writes for the tokenizer, by relative path."""
    with tempfile.TemporaryDirectory(prefix="polyspec-tokenizer-") as tmp:
        root = Path(tmp)
        tokenizer.save_pretrained(str(root))
        return {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }


def find_fim_tokens(vocabulary: Iterable[str]) -> FimTokens | None:
    """The first complete set of FIM tokens present in a vocabulary, if any."""
    tokens = set(vocabulary)
    for spelling in FIM_SPELLINGS:
        if {spelling.prefix, spelling.suffix, spelling.middle} <= tokens:
            return spelling
    return None


def max_context_tokens(config: Any) -> int:
    """The longest context the model accepts, from its (text) config."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _CONTEXT_KEYS:
        value = getattr(text_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"the model config names no context limit (looked for {', '.join(_CONTEXT_KEYS)})")


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(item) for item in value if item is not None]


# Special tokens that end a document or a turn in common model families. Configs converted from GGUF
# often keep only one end id (Qwen2.5's generation config upstream lists both <|im_end|> and
# <|endoftext|>; its GGUF keeps <|im_end|>), and a raw-text completion then runs past <|endoftext|>.
END_OF_TEXT_TOKENS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
)


def eos_token_ids(
    config: Any, generation_config: Any, vocab_size: int, tokenizer: Any = None
) -> tuple[int, ...]:
    """End-of-sequence ids: the generation config's, the model config's, the tokenizer's eos token, and
    the tokenizer's special end-of-text / end-of-turn tokens (``END_OF_TEXT_TOKENS``); deduplicated, in
    range."""
    candidates = [
        *_as_ids(getattr(generation_config, "eos_token_id", None)),
        *_as_ids(getattr(config, "eos_token_id", None)),
    ]
    if tokenizer is not None:
        candidates += _as_ids(getattr(tokenizer, "eos_token_id", None))
        special = set(getattr(tokenizer, "all_special_tokens", ())) | set(
            getattr(tokenizer, "added_tokens_encoder", {})
        )
        vocab = tokenizer.get_vocab()
        candidates += [vocab[name] for name in END_OF_TEXT_TOKENS if name in special and name in vocab]
    return tuple(dict.fromkeys(token for token in candidates if 0 <= token < vocab_size))


def dtype_name(dtype: Any) -> str:
    """``torch.float32`` -> ``float32``."""
    return str(dtype).removeprefix("torch.")


# Config keys that change with how a model is loaded or saved, not with its weights.
_LOADING_KEYS = ("torch_dtype", "dtype", "_name_or_path", "transformers_version", "quantization_config")
_FINGERPRINT_ENTRIES = 4096


def model_fingerprint(model: Any) -> str:
    """sha256 (hex, 32 digits) of the model's architecture and a sample of its weights.

    Cheap (no full pass over the weights) and independent of the serving precision: the config without
    its loading keys, plus the signs of the first and last ``_FINGERPRINT_ENTRIES`` entries of the input
    embedding (rounding to bfloat16 or quantizing the linear layers keeps them). Two sizes of one
    family, sharing a tokenizer, differ in both.
    """
    config = {k: v for k, v in model.config.to_dict().items() if k not in _LOADING_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
    flat = model.get_input_embeddings().weight.detach().reshape(-1)
    for part in (flat[:_FINGERPRINT_ENTRIES], flat[-_FINGERPRINT_ENTRIES:]):
        digest.update((part.float().cpu() > 0).numpy().tobytes())
    return digest.hexdigest()[:32]
