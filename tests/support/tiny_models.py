"""Tiny randomly initialised causal LMs for tests: one builder, on a real tokenizer or a word-level one.

``build_tiny_model`` draws the weights from a ``torch.Generator`` seeded by the caller, so a
(tokenizer, recipe) pair always gives the same model. The output head is untied and scaled so that
next-token distributions are peaked (logit standard deviation ``logit_std``) and differ from seed to
seed: such a drafter disagrees with any other model, which exercises every rejection path. The folder
holds the weights, the tokenizer and ``tiny.json`` (the recipe); building is idempotent and publishes
the folder atomically, so a recipe built into the model cache is reused across sessions.

- On a real tokenizer (a folder, e.g. a cached model's): a model with that vocabulary, for tests of
  real tokenization (the fixtures in ``tests.fixtures.models``).
- ``build_word_model``: the same builder on ``build_word_tokenizer()``, a word-level tokenizer over
  ``w0 .. w249`` plus special (and optionally FIM) tokens, with a head wider than the tokenizer as in
  real models and 128 positions: small and fast enough for the model-service unit tests.

``load_reference`` and ``reference_logits`` give a saved model's own uncached forwards, the yardstick
of the engine tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3TextConfig,
    GPTBigCodeConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from core.errors import InvalidArgumentError
from services.modelstore.cache import file_lock, publish, remove_orphans, staging_dir

TinyArch = Literal["llama", "qwen2", "gpt_bigcode", "gemma3_text"]
TINY_ARCHS: tuple[TinyArch, ...] = ("llama", "qwen2", "gpt_bigcode", "gemma3_text")
RECIPE_NAME = "tiny.json"
RECIPE_VERSION = 3

FimStyle = Literal["starcoder", "qwen"] | None
SPECIAL_TOKENS = ("<unk>", "<bos>", "<eos>")
FIM_TOKENS = {
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    "qwen": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
}
WORD_COUNT = 250
PADDING_ROWS = 6  # the word-level models' head is wider than their tokenizer, as in real models
MAX_POSITIONS = 128  # the word-level models' context
WORD_HIDDEN = 32
WORD_INIT_STD = 0.3  # every matrix of a word-level model, its head included


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines a tiny model's folder."""

    arch: TinyArch
    seed: int
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int
    sliding_window: int  # gemma3_text's sliding layers only
    init_std: float
    logit_std: float
    tokenizer_len: int
    tokenizer_sha256: str  # of the tokenizer's vocabulary
    version: int = RECIPE_VERSION


def _check_shape(recipe: TinyRecipe) -> None:
    if recipe.arch not in TINY_ARCHS:
        raise InvalidArgumentError("arch", f"must be one of {', '.join(TINY_ARCHS)}, got {recipe.arch!r}")
    if recipe.vocab_size < recipe.tokenizer_len:
        raise InvalidArgumentError(
            "vocab_size", f"must be >= the tokenizer's {recipe.tokenizer_len} tokens, got {recipe.vocab_size}"
        )
    sizes = ("hidden", "layers", "heads", "kv_heads", "intermediate", "max_positions", "sliding_window")
    for field in sizes:
        if getattr(recipe, field) < 1:
            raise InvalidArgumentError(field, f"must be >= 1, got {getattr(recipe, field)}")
    if recipe.hidden % recipe.heads or recipe.heads % recipe.kv_heads:
        raise InvalidArgumentError(
            "heads", f"hidden ({recipe.hidden}) % heads ({recipe.heads}) and heads % kv_heads must be 0"
        )
    if recipe.init_std <= 0:
        raise InvalidArgumentError("init_std", f"must be > 0, got {recipe.init_std}")
    if recipe.logit_std <= 0:
        raise InvalidArgumentError("logit_std", f"must be > 0, got {recipe.logit_std}")


def _special_ids(tokenizer: Any) -> dict[str, Any]:
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id
    pad = tokenizer.pad_token_id
    return {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos if pad is None else pad}


def make_config(recipe: TinyRecipe, tokenizer: Any) -> Any:
    """The transformers config of a tiny model (untied output head)."""
    special = _special_ids(tokenizer)
    if recipe.arch == "gpt_bigcode":
        return GPTBigCodeConfig(
            vocab_size=recipe.vocab_size,
            n_embd=recipe.hidden,
            n_layer=recipe.layers,
            n_head=recipe.heads,
            n_inner=recipe.intermediate,
            n_positions=recipe.max_positions,
            multi_query=recipe.kv_heads == 1,
            tie_word_embeddings=False,
            **special,
        )
    common: dict[str, Any] = {
        "vocab_size": recipe.vocab_size,
        "hidden_size": recipe.hidden,
        "num_hidden_layers": recipe.layers,
        "num_attention_heads": recipe.heads,
        "num_key_value_heads": recipe.kv_heads,
        "intermediate_size": recipe.intermediate,
        "max_position_embeddings": recipe.max_positions,
        "tie_word_embeddings": False,
        **special,
    }
    if recipe.arch == "gemma3_text":
        head_dim = recipe.hidden // recipe.heads
        return Gemma3TextConfig(head_dim=head_dim, sliding_window=recipe.sliding_window, **common)
    return (LlamaConfig if recipe.arch == "llama" else Qwen2Config)(**common)


def init_weights(model: Any, seed: int, init_std: float, head_std: float) -> None:
    """Redraw every parameter from a generator seeded with ``seed``, in parameter-name order.

    The output head ~ N(0, head_std^2); other matrices ~ N(0, init_std^2); biases 0; other vectors
    (norm scales) 1.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            if name == "lm_head.weight":
                param.normal_(0.0, head_std, generator=generator)
            elif param.dim() >= 2:
                param.normal_(0.0, init_std, generator=generator)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)


def _vocabulary_sha256(tokenizer: Any) -> str:
    entries = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(entries, ensure_ascii=False).encode()).hexdigest()


def _recipe_matches(folder: Path, recipe: TinyRecipe) -> bool:
    try:
        saved = json.loads((folder / RECIPE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(saved.get("recipe") == asdict(recipe) and (folder / "config.json").is_file())


def _load_tokenizer(tokenizer: str | os.PathLike[str] | Any) -> tuple[Any, str]:
    """The tokenizer itself (loaded from a folder, or as given) and how the recipe file names it."""
    if isinstance(tokenizer, (str, os.PathLike)):
        return AutoTokenizer.from_pretrained(tokenizer, local_files_only=True), str(tokenizer)
    return tokenizer, type(tokenizer).__name__


def build_tiny_model(
    tokenizer: str | os.PathLike[str] | Any,
    out_dir: str | os.PathLike[str],
    arch: TinyArch = "llama",
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    max_positions: int = 4096,
    sliding_window: int = 8,
    vocab_size: int | None = None,
    init_std: float = 0.02,
    logit_std: float = 4.0,
) -> Path:
    """Build (or reuse) a tiny random ``arch`` model on ``tokenizer`` (a tokenizer folder, or a loaded
    transformers tokenizer) into ``out_dir``; returns ``out_dir``.

    ``vocab_size`` defaults to ``len(tokenizer)``; a larger value pads the embedding like real checkpoints.
    ``intermediate`` defaults to ``4 * hidden``. Hidden states leave the final norm with unit scale, so
    the head's weights get standard deviation ``logit_std / sqrt(hidden)``. GPTBigCode uses multi-query
    attention when ``kv_heads == 1`` (otherwise multi-head, with ``kv_heads`` ignored).
    """
    loaded, source = _load_tokenizer(tokenizer)
    recipe = TinyRecipe(
        arch=arch,
        seed=seed,
        vocab_size=len(loaded) if vocab_size is None else vocab_size,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=4 * hidden if intermediate is None else intermediate,
        max_positions=max_positions,
        sliding_window=sliding_window,
        init_std=init_std,
        logit_std=logit_std,
        tokenizer_len=len(loaded),
        tokenizer_sha256=_vocabulary_sha256(loaded),
    )
    _check_shape(recipe)
    target = Path(out_dir).expanduser()
    if _recipe_matches(target, recipe):
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if not _recipe_matches(target, recipe):
            remove_orphans(target)
            with staging_dir(target) as staging:
                _save_tiny(recipe, loaded, source, staging)
                publish(staging, target)
    return target


def _save_tiny(recipe: TinyRecipe, tokenizer: Any, source: str, out_dir: Path) -> None:
    config = make_config(recipe, tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    init_weights(model, recipe.seed, recipe.init_std, recipe.logit_std / math.sqrt(recipe.hidden))
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    recipe_doc = {"recipe": asdict(recipe), "tokenizer_source": source}
    (out_dir / RECIPE_NAME).write_text(
        json.dumps(recipe_doc, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def build_word_tokenizer(fim: FimStyle = None) -> PreTrainedTokenizerFast:
    """A word-level ``PreTrainedTokenizerFast`` over ``w0 .. w249`` plus special (and optionally FIM)
    tokens."""
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


def build_word_model(directory: Path, arch: TinyArch = "llama", seed: int = 0, fim: FimStyle = None) -> Path:
    """A tiny ``arch`` model on the word-level tokenizer in ``directory`` (hidden 32, 2 layers, 4 heads,
    ``MAX_POSITIONS`` positions, ``PADDING_ROWS`` head rows beyond the tokenizer); returns it."""
    tokenizer = build_word_tokenizer(fim)
    return build_tiny_model(
        tokenizer,
        directory,
        arch,
        seed=seed,
        hidden=WORD_HIDDEN,
        heads=4,
        kv_heads=2 if arch in ("llama", "qwen2") else 1,  # multi-query GPTBigCode, one KV head for Gemma
        intermediate=2 * WORD_HIDDEN,
        max_positions=MAX_POSITIONS,
        vocab_size=len(tokenizer) + PADDING_ROWS,
        init_std=WORD_INIT_STD,
        logit_std=WORD_INIT_STD * math.sqrt(WORD_HIDDEN),
    )


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
